package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestDeleteAgent(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	code, out, stderr := runCLI(t, "delete", "agent", "no-such-agent")
	if code != 1 || out != "" || !strings.Contains(stderr, "nxmesh: hub: ") || !strings.Contains(stderr, "no-such-agent") {
		t.Fatalf("exit %d:\n%s\n%s", code, out, stderr)
	}

	// A refused token says how to log in again.
	code, _, stderr = runCLI(t, "delete", "agent", "no-such-agent", "--token", "nxs_bogus")
	if code != 1 || !strings.Contains(stderr, "run nxmesh login again") {
		t.Fatalf("bogus token: exit %d: %s", code, stderr)
	}

	// An enrolled agent is deleted.
	code, tok, stderr := runCLI(t, "token", "create")
	if code != 0 {
		t.Fatalf("token create: %s", stderr)
	}
	state := t.TempDir()
	code, out, stderr = runCLI(t, "agent", "enroll", "--hub", s.APIURL(), "--token", strings.TrimSpace(tok), "--state-dir", state)
	if code != 0 {
		t.Fatalf("agent enroll: %s", stderr)
	}
	id := regexp.MustCompile(`/agent/([0-9a-f-]{36})`).FindStringSubmatch(out)[1]
	code, out, stderr = runCLI(t, "delete", "agent", id)
	if code != 0 || out != "agent "+id+" deleted; its certificates are revoked\n" {
		t.Fatalf("delete agent: exit %d:\n%s\n%s", code, out, stderr)
	}
}
