package main

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/hub"
	"github.com/nxmesh/nxmesh/hub/fleet"
	"github.com/nxmesh/nxmesh/internal/testenv"
)

// enrollCLI enrolls an agent with the CLI and returns its state directory
// and ID. Its status server listens on statusPort, so that several agents
// and tests can share the machine.
func enrollCLI(t *testing.T, s *hub.Server, statusPort int, labels string) (dir, id string) {
	t.Helper()
	all := fleet.LabelStatusPort + "=" + strconv.Itoa(statusPort)
	if labels != "" {
		all += "," + labels
	}
	code, tok, stderr := runCLI(t, "token", "create", "--labels", all)
	if code != 0 {
		t.Fatalf("token create: %s", stderr)
	}
	dir = t.TempDir()
	code, out, stderr := runCLI(t, "agent", "enroll", "--hub", s.APIURL(), "--token", strings.TrimSpace(tok), "--state-dir", dir)
	if code != 0 {
		t.Fatalf("agent enroll: %s", stderr)
	}
	return dir, regexp.MustCompile(`/agent/([0-9a-f-]{36})`).FindStringSubmatch(out)[1]
}

// runAgent runs a real agent managing a real nginx, connected to the hub's
// embedded relay, until the test ends.
func runAgent(t *testing.T, s *hub.Server, dir string, statusPort int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := agent.RunConfig{
		StateDir: dir, Relays: []string{strings.Replace(s.AgentURL(), "https://", "wss://", 1) + "/v1/agent"},
		NginxBinary: testenv.NginxBinary(t).Path, StatusListen: "127.0.0.1:" + strconv.Itoa(statusPort),
		Logger: slog.New(slog.DiscardHandler),
	}
	go func() { done <- agent.Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	})
}

// waitOnline waits until get agents shows n agents online.
func waitOnline(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, out, stderr := runCLI(t, "get", "agents", "--status", "online")
		if code != 0 {
			t.Fatalf("get agents: %s", stderr)
		}
		if got := strings.Count(out, "\n") - 1; got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d agents online after 15 s, want %d:\n%s", strings.Count(out, "\n")-1, n, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func vhostOn(name string, port int, defaultServer bool) string {
	return fmt.Sprintf(`apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: %s
spec:
  serverNames: [%s.example.com]
  listen: [{port: %d, defaultServer: %t}]
  locations: [{path: /, return: {status: 204}}]
`, name, name, port, defaultServer)
}

// TestApplyWaitsForAgents: with a real agent and nginx, apply exits 0 once
// the agent runs the revision, and 1 with nginx's own words when the agent
// rejects it. An enrolled agent that never connected is a warning only.
func TestApplyWaitsForAgents(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	port, statusA, statusB := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	stateA, idA := enrollCLI(t, s, statusA, "env=test")
	_, idB := enrollCLI(t, s, statusB, "env=test") // enrolled, never started: offline
	runAgent(t, s, stateA, statusA)
	waitOnline(t, 1)

	code, out, stderr := runCLIInput(t, vhostOn("alpha", port, true), "apply", "-f", "-", "--timeout", "30s")
	if code != 0 || !regexp.MustCompile(`\nrevision \d+ applied by 1 of 1 online agent\n$`).MatchString(out) {
		t.Fatalf("apply: exit %d:\n%s\n%s", code, out, stderr)
	}
	if !strings.Contains(stderr, "warning: 1 agent offline, to get revision") || !strings.Contains(stderr, idB) || strings.Contains(stderr, idA+"\n") {
		t.Errorf("no warning naming the offline agent %s:\n%s", idB, stderr)
	}

	// A second default server on the same port: the schema and the hub
	// accept it, nginx -t on the agent does not.
	code, out, stderr = runCLIInput(t, vhostOn("beta", port, true), "apply", "-f", "-", "--timeout", "30s")
	if code != 1 {
		t.Fatalf("apply of a config nginx rejects: exit %d:\n%s\n%s", code, out, stderr)
	}
	for _, want := range []string{"agent " + idA, ": rejected: ", "\n    ", "[emerg] ", "a duplicate default server", "failed on 1 of 1 online agent"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}

	// The agent shows its state.
	code, out, stderr = runCLI(t, "get", "agents", "-l", "env=test")
	if code != 0 || !regexp.MustCompile(`(?m)^`+idA+` +rejected +yes +\S+ +env=test,nxmesh\.io/status-port=\d+ +\d+s +[0-9a-f]{12}$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^`+idB+` +\S+ +no +- `).MatchString(out) {
		t.Errorf("get agents: exit %d:\n%s\n%s", code, out, stderr)
	}
}
