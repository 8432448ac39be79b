package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/nginx"
)

func TestApplyServes(t *testing.T) {
	e := newEnv(t, nil)
	b := bundle(t, e.ports, 1, 3)
	res := mustApply(t, e.applier, b)
	if res.PreviousHash != "" || res.Reloads != 1 {
		t.Errorf("first apply: previous %q reloads %d, want none and 1", res.PreviousHash, res.Reloads)
	}
	serves(t, e.ports.vhost, "gen=1 vhost=0")
	gen, err := nginx.Generation(context.Background(), e.ports.statusURL())
	if err != nil || gen != b.Hash {
		t.Fatalf("generation %q (%v), want %s", gen, err, b.Hash)
	}
	// The same bundle again is a no-op: nothing to reload.
	if res := mustApply(t, e.applier, b); res.Reloads != 0 {
		t.Errorf("re-apply of the live bundle reloaded %d times", res.Reloads)
	}
	b2 := bundle(t, e.ports, 2, 3)
	res = mustApply(t, e.applier, b2)
	if res.PreviousHash != b.Hash {
		t.Errorf("previous %s, want %s", res.PreviousHash, b.Hash)
	}
	serves(t, e.ports.vhost, "gen=2 vhost=0")
}

func TestApplyRejected(t *testing.T) {
	tests := []struct {
		name     string
		extra    nginx.File
		wantFile string
		wantMsg  string
	}{
		{
			name:     "unknown directive",
			extra:    nginx.File{Path: "vhosts/zz-bad.conf", Data: []byte("server {\n    listen 127.0.0.1:1;\n    bogus_directive on;\n}\n")},
			wantFile: "vhosts/zz-bad.conf:3",
			wantMsg:  `unknown directive "bogus_directive"`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			good := bundle(t, e.ports, 1, 2)
			mustApply(t, e.applier, good)
			serves(t, e.ports.vhost, "gen=1")
			clients := startClients(t, e.ports.vhost)

			bad := bundle(t, e.ports, 2, 2, tc.extra)
			res := e.applier.Apply(context.Background(), bad)
			clients.finish(t)
			if res.State != agent.Rejected {
				t.Fatalf("state %s (%s), want rejected", res.State, res.Reason)
			}
			if !strings.Contains(res.Reason, tc.wantMsg) || !strings.Contains(res.Reason, tc.wantFile) {
				t.Errorf("reason %q, want %q at %s", res.Reason, tc.wantMsg, tc.wantFile)
			}
			if !strings.Contains(res.NginxOutput, tc.wantMsg) {
				t.Errorf("nginx output %q lacks %q", res.NginxOutput, tc.wantMsg)
			}
			var ae *agent.ApplyError
			if err := res.Err(); err == nil || !errors.As(err, &ae) || ae.Output == "" {
				t.Errorf("Err() = %v, want an *ApplyError with nginx's output", err)
			}
			if res.Reloads != 0 {
				t.Errorf("rejected bundle caused %d reloads", res.Reloads)
			}
			gen, err := nginx.Generation(context.Background(), e.ports.statusURL())
			if err != nil || gen != good.Hash {
				t.Errorf("generation %q (%v), want the old %s", gen, err, good.Hash)
			}
			if live, _ := e.applier.Live(); live != good.Hash {
				t.Errorf("current is %s, want %s", live, good.Hash)
			}
			if _, err := os.Stat(filepath.Join(e.dir, "releases", bad.Hash)); !os.IsNotExist(err) {
				t.Errorf("rejected release left on disk: %v", err)
			}
		})
	}
}

func TestApplyReloadFailsRollsBack(t *testing.T) {
	e := newEnv(t, nil)
	good := bundle(t, e.ports, 1, 2)
	mustApply(t, e.applier, good)
	serves(t, e.ports.vhost, "gen=1")

	// nginx -t does not bind, so it accepts a port another process holds;
	// the reload then fails and the old workers keep serving.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	port := held.Addr().(*net.TCPAddr).Port
	bad := bundle(t, e.ports, 2, 2, nginx.File{Path: "vhosts/zz-held.conf",
		Data: fmt.Appendf(nil, "server {\n    listen 127.0.0.1:%d;\n    return 200 \"held\";\n}\n", port)})

	clients := startClients(t, e.ports.vhost)
	res := e.applier.Apply(context.Background(), bad)
	clients.finish(t)
	if res.State != agent.RolledBack {
		t.Fatalf("state %s (%s), want rolled_back", res.State, res.Reason)
	}
	if !strings.Contains(res.Reason, "Address already in use") || !strings.Contains(res.Reason, "[emerg]") {
		t.Errorf("reason %q does not carry nginx's bind error", res.Reason)
	}
	if res.PreviousHash != good.Hash || res.Reloads != 2 {
		t.Errorf("previous %s reloads %d, want %s and 2", res.PreviousHash, res.Reloads, good.Hash)
	}
	gen, err := nginx.Generation(context.Background(), e.ports.statusURL())
	if err != nil || gen != good.Hash {
		t.Errorf("generation %q (%v), want the old %s", gen, err, good.Hash)
	}
	serves(t, e.ports.vhost, "gen=1")
	t.Logf("rolled back in %v: %s", res.Durations.Total, res.Reason)
}

func TestTwentyAppliesUnderLoad(t *testing.T) {
	e := newEnv(t, nil)
	mustApply(t, e.applier, bundle(t, e.ports, 0, 5))
	serves(t, e.ports.vhost, "gen=0")
	clients := startClients(t, e.ports.vhost)
	for gen := 1; gen <= 20; gen++ {
		b := bundle(t, e.ports, gen, 5)
		mustApply(t, e.applier, b)
		// Verified live: a fresh connection sees the new generation at once.
		body, err := get(fresh, e.ports.vhost, "v0.test")
		if want := fmt.Sprintf("gen=%d vhost=0", gen); err != nil || !strings.HasPrefix(body, want) {
			t.Fatalf("after apply %d: %q (%v), want %q", gen, body, err, want)
		}
	}
	clients.finish(t)
	// Only the newest KeepReleases releases stay.
	entries, err := os.ReadDir(filepath.Join(e.dir, "releases"))
	if err != nil {
		t.Fatal(err)
	}
	dirs := 0
	for _, en := range entries {
		if en.IsDir() {
			dirs++
		}
	}
	if dirs != 5 {
		t.Errorf("%d releases on disk, want 5", dirs)
	}
}

// TestPIDFileMode reloads an nginx the test started itself, found through
// its pid file.
func TestPIDFileMode(t *testing.T) {
	e := newEnv(t, nil)
	first := bundle(t, e.ports, 1, 2)
	mustApply(t, e.applier, first)
	// Hand nginx over: stop the managed child, start one the applier does
	// not own on the same tree.
	if err := e.managed.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	bin := testenv.NginxBinary(t)
	cmd := bin.Command(context.Background(), e.dir, filepath.Join(e.dir, "current", "nginx.conf"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
	serves(t, e.ports.vhost, "gen=1")

	a, err := agent.New(agent.Config{
		StateDir:  e.dir,
		Binary:    bin,
		Reloader:  &nginx.PIDFile{Path: filepath.Join(e.dir, "nginx.pid")},
		StatusURL: e.ports.statusURL(),
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := a.Recover(context.Background())
	if err != nil || rec.Live != first.Hash || !rec.Verified {
		t.Fatalf("recover: %+v, %v", rec, err)
	}
	clients := startClients(t, e.ports.vhost)
	for gen := 2; gen <= 4; gen++ {
		mustApply(t, a, bundle(t, e.ports, gen, 2))
		serves(t, e.ports.vhost, fmt.Sprintf("gen=%d", gen))
	}
	clients.finish(t)
	if err := syscall.Kill(cmd.Process.Pid, 0); err != nil {
		t.Errorf("the test's nginx master is gone: %v", err)
	}
}
