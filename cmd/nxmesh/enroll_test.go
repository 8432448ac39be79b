package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/hub"
	"github.com/nxmesh/nxmesh/pki"
)

// startTestHub runs a real hub on 127.0.0.1 with SQLite in a temp dir.
func startTestHub(t *testing.T) (*hub.Server, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := hub.New(context.Background(), hub.Config{DataDir: dir, APIAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub: %v", err)
		}
		s.Close()
	})
	return s, dir
}

// loginCLI runs nxmesh login against s with the initial admin password.
func loginCLI(t *testing.T, s *hub.Server, dir string) {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	pw, err := os.ReadFile(filepath.Join(dir, "initial-admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := runWithInput([]string{"login", "--hub", s.APIURL(), "--ca-file", filepath.Join(dir, "ca", "root.pem"),
		"--user", "admin", "--password-stdin"}, bytes.NewReader(pw), &out, &errb)
	if code != 0 {
		t.Fatalf("login: exit %d: %s", code, errb.String())
	}
}

func TestEnrollEndToEnd(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)

	code, tok, stderr := runCLI(t, "token", "create", "--workspace", "default", "--role", "agent", "--labels", "env=prod,region=eu", "--ttl", "10m")
	if code != 0 {
		t.Fatalf("token create: exit %d: %s", code, stderr)
	}
	tok = strings.TrimSpace(tok)
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("token create printed %q, want the token alone", tok)
	}

	state := filepath.Join(t.TempDir(), "agent")
	code, out, stderr := runCLI(t, "agent", "enroll", "--hub", s.APIURL(), "--token", tok, "--state-dir", state)
	if code != 0 {
		t.Fatalf("agent enroll: exit %d: %s", code, stderr)
	}
	uri := regexp.MustCompile(`spiffe://nxmesh\.local/ws/default/agent/[0-9a-f-]{36}`).FindString(out)
	if uri == "" {
		t.Fatalf("enroll output %q names no agent identity", out)
	}

	files := pki.Files{Dir: state, Role: pki.RoleAgent}
	fi, err := os.Stat(files.KeyPath())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent.key: %v, %v", fi, err)
	}
	cert, err := files.LoadKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := pki.IdentityFromCert(cert.Leaf); id.String() != uri {
		t.Fatalf("URI SAN %s, enroll said %s", id, uri)
	}
	if _, err := files.LoadRoot(s.RootFingerprint()); err != nil {
		t.Fatal(err)
	}
	id, _ := pki.ParseIdentity(uri)
	a, err := s.Store().GetAgent(context.Background(), id.ID)
	if err != nil || a.Labels["env"] != "prod" || a.Labels["region"] != "eu" {
		t.Fatalf("agent record %+v, %v", a, err)
	}

	// openssl agrees that the chain is valid.
	chain, _ := os.ReadFile(files.CertPath())
	certs, err := pki.ParseCertsPEM(chain)
	if err != nil || len(certs) != 2 {
		t.Fatalf("agent.crt holds %d certificates: %v", len(certs), err)
	}
	tmp := t.TempDir()
	leaf, inter := filepath.Join(tmp, "leaf.pem"), filepath.Join(tmp, "intermediate.pem")
	os.WriteFile(leaf, pki.EncodeCertsPEM(certs[0]), 0o644)
	os.WriteFile(inter, pki.EncodeCertsPEM(certs[1]), 0o644)
	if msg, err := exec.Command("openssl", "verify", "-CAfile", files.RootPath(), "-untrusted", inter, leaf).CombinedOutput(); err != nil {
		t.Fatalf("openssl verify: %v: %s", err, msg)
	}

	// The same token again: refused, with the reason.
	code, _, stderr = runCLI(t, "agent", "enroll", "--hub", s.APIURL(), "--token", tok, "--state-dir", t.TempDir())
	if code == 0 || !strings.Contains(stderr, "already used") {
		t.Fatalf("reused token: exit %d: %s", code, stderr)
	}
}

func TestRelayEnrollPin(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	code, tok, stderr := runCLI(t, "token", "create", "--role", "relay")
	if code != 0 {
		t.Fatalf("token create: %s", stderr)
	}
	tok = strings.TrimSpace(tok)

	// A wrong pin stops enrollment before anything is sent or written.
	bad := filepath.Join(t.TempDir(), "bad")
	code, _, stderr = runCLI(t, "relay", "enroll", "--hub", s.APIURL(), "--token", tok, "--state-dir", bad, "--ca-fingerprint", strings.Repeat("0", 64))
	if code == 0 || !strings.Contains(stderr, "fingerprint") {
		t.Fatalf("wrong pin: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("a refused enrollment created %s", bad)
	}
	// An agent command with a relay token is refused locally.
	if code, _, stderr := runCLI(t, "agent", "enroll", "--hub", s.APIURL(), "--token", tok, "--state-dir", bad); code == 0 || !strings.Contains(stderr, "relay") {
		t.Fatalf("agent enroll with a relay token: exit %d: %s", code, stderr)
	}

	state := t.TempDir()
	code, out, stderr := runCLI(t, "relay", "enroll", "--hub", s.APIURL(), "--token", tok, "--state-dir", state, "--ca-fingerprint", s.RootFingerprint())
	if code != 0 || !strings.Contains(out, "spiffe://nxmesh.local/relay/") {
		t.Fatalf("relay enroll: exit %d: %s %s", code, out, stderr)
	}
	if _, err := (pki.Files{Dir: state, Role: pki.RoleRelay}).LoadKeyPair(); err != nil {
		t.Fatal(err)
	}
}

func TestTokenCreateNeedsLogin(t *testing.T) {
	s, dir := startTestHub(t)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	code, _, stderr := runCLI(t, "token", "create", "--hub", s.APIURL())
	if code == 0 || !strings.Contains(stderr, "not logged in") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	code, _, stderr = runCLI(t, "token", "create", "--hub", s.APIURL(), "--token", "nxs_bogus",
		"--ca-file", filepath.Join(dir, "ca", "root.pem"))
	if code == 0 || !strings.Contains(stderr, "unknown or expired") {
		t.Fatalf("bogus API token: exit %d: %s", code, stderr)
	}
}
