package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/nginx"
)

// Environment of TestCrashHelper, set by TestCrashRecovery.
const (
	envCrashAt     = "NXMESH_AGENT_CRASH_AT"
	envCrashDir    = "NXMESH_AGENT_CRASH_DIR"
	envCrashBundle = "NXMESH_AGENT_CRASH_BUNDLE"
	envCrashStatus = "NXMESH_AGENT_CRASH_STATUS"
)

// TestCrashHelper is not a test: TestCrashRecovery runs the test binary
// again with it, and it applies a bundle and kills itself with SIGKILL at
// the step named by NXMESH_AGENT_CRASH_AT.
func TestCrashHelper(t *testing.T) {
	step := os.Getenv(envCrashAt)
	if step == "" {
		return // run directly, there is nothing to crash
	}
	dir := os.Getenv(envCrashDir)
	data, err := os.ReadFile(os.Getenv(envCrashBundle))
	if err != nil {
		t.Fatal(err)
	}
	var b nginx.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{
		StateDir:  dir,
		Binary:    testenv.NginxBinary(t),
		Reloader:  &nginx.PIDFile{Path: filepath.Join(dir, "nginx.pid")},
		StatusURL: os.Getenv(envCrashStatus),
		Hook: func(s agent.Step) {
			if string(s) == step {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // SIGKILL is not instantaneous; never go on
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	res := a.Apply(context.Background(), &b)
	t.Fatalf("apply finished without crashing at %s: %s %s", step, res.State, res.Reason)
}

// TestCrashRecovery kills an agent with SIGKILL at every step of an apply
// from release A to B, then recovers: the tree is A or B, complete, nginx
// serves it, and the report says which and why.
func TestCrashRecovery(t *testing.T) {
	tests := []struct {
		step    agent.Step
		want    string // "old" or "new"
		outcome agent.Outcome
	}{
		{agent.StepStarted, "old", agent.RolledBackOnRecover},
		{agent.StepStaged, "old", agent.RolledBackOnRecover},
		{agent.StepRenamed, "old", agent.RolledBackOnRecover},
		{agent.StepTested, "old", agent.RolledBackOnRecover},
		{agent.StepSwitched, "new", agent.RolledForward},
		{agent.StepReloaded, "new", agent.RolledForward},
		{agent.StepVerified, "new", agent.RolledForward},
		{agent.StepCommitted, "new", agent.NoneInterrupted},
	}
	for _, tc := range tests {
		t.Run(string(tc.step), func(t *testing.T) {
			e := newEnv(t, nil)
			old := bundle(t, e.ports, 1, 3)
			mustApply(t, e.applier, old)
			serves(t, e.ports.vhost, "gen=1")
			next := bundle(t, e.ports, 2, 4)
			bpath := filepath.Join(t.TempDir(), "bundle.json")
			data, err := json.Marshal(next)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(bpath, data, 0o600); err != nil {
				t.Fatal(err)
			}

			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), envCrashAt+"="+string(tc.step), envCrashDir+"="+e.dir,
				envCrashBundle+"="+bpath, envCrashStatus+"="+e.ports.statusURL())
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("helper did not die of SIGKILL at %s: %v\n%s", tc.step, err, out)
			}

			rec, err := e.applier.Recover(context.Background())
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			want, other := old, next
			if tc.want == "new" {
				want, other = next, old
			}
			if rec.Live != want.Hash || rec.Outcome != tc.outcome || !rec.Verified {
				t.Errorf("recovery %+v, want live %s (%s) outcome %q", rec, want.Hash[:12], tc.want, tc.outcome)
			}
			if tc.outcome != agent.NoneInterrupted && rec.Interrupted != next.Hash {
				t.Errorf("recovery names interrupted %q, want %s", rec.Interrupted, next.Hash)
			}
			assertTree(t, filepath.Join(e.dir, "current"), want, other)
			gen, err := nginx.Generation(context.Background(), e.ports.statusURL())
			if err != nil || gen != want.Hash {
				t.Errorf("nginx serves %q (%v), want %s", gen, err, want.Hash)
			}
			if tc.want == "new" {
				serves(t, e.ports.vhost, "gen=2")
			} else {
				serves(t, e.ports.vhost, "gen=1")
			}
			matches, _ := filepath.Glob(filepath.Join(e.dir, "releases", ".tmp-*"))
			if len(matches) != 0 {
				t.Errorf("temp dirs left after recovery: %v", matches)
			}
			// The agent goes on applying after recovery.
			mustApply(t, e.applier, bundle(t, e.ports, 3, 2))
			serves(t, e.ports.vhost, "gen=3")
		})
	}
}

// assertTree checks that dir holds exactly the files of want, byte for byte.
func assertTree(t *testing.T, dir string, want, other *nginx.Bundle) {
	t.Helper()
	seen := 0
	err := filepath.Walk(dir+"/", func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || filepath.Base(p) == ".nxmesh-bundle.json" {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		f := want.File(filepath.ToSlash(rel))
		if f == nil {
			t.Errorf("live tree has %s, which bundle %s lacks (bundle %s has it: %v)", rel, want.Hash[:12], other.Hash[:12], other.File(rel) != nil)
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if string(data) != string(f.Data) {
			t.Errorf("live %s differs from bundle %s", rel, want.Hash[:12])
		}
		seen++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(want.Files) {
		t.Errorf("live tree has %d of the %d files of %s", seen, len(want.Files), want.Hash[:12])
	}
}
