package relay

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTicketKeysRotateAndPersist(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k1, err := loadTicketKeys(dir, t0)
	if err != nil || len(k1) != 1 {
		t.Fatalf("first keys: %v, %v", k1, err)
	}
	fi, err := os.Stat(filepath.Join(dir, ticketKeysFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
	again, err := loadTicketKeys(dir, t0.Add(time.Hour))
	if err != nil || len(again) != 1 || again[0] != k1[0] {
		t.Fatalf("within its lifetime the key must be kept: %v", err)
	}
	k2, err := loadTicketKeys(dir, t0.Add(ticketKeyLifetime))
	if err != nil || len(k2) != 2 || k2[1] != k1[0] || k2[0] == k1[0] {
		t.Fatalf("after its lifetime: a new key first, the old one kept: %v", err)
	}
	k3, err := loadTicketKeys(dir, t0.Add(2*ticketKeyLifetime))
	if err != nil || len(k3) != 2 || k3[1] != k2[0] {
		t.Fatalf("at most two keys are kept: %v", err)
	}

	if err := os.Chmod(filepath.Join(dir, ticketKeysFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTicketKeys(dir, t0); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable key file: %v; want a refusal naming the fix", err)
	}
	if err := os.Chmod(filepath.Join(dir, ticketKeysFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ticketKeysFile), []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadTicketKeys(dir, t0); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("a malformed key file: %v; want a refusal", err)
	}
}
