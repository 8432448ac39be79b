package agent_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent"
)

func TestDrift(t *testing.T) {
	tests := []struct {
		name   string
		policy agent.DriftPolicy
	}{
		{"alert", agent.DriftAlert},
		{"revert", agent.DriftRevert},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen []*agent.Drift
			e := newEnv(t, func(c *agent.Config) {
				c.DriftPolicy = tc.policy
				c.OnDrift = func(d *agent.Drift) { seen = append(seen, d) }
			})
			b := bundle(t, e.ports, 1, 2)
			mustApply(t, e.applier, b)
			if d, err := e.applier.CheckDrift(context.Background()); err != nil || d != nil {
				t.Fatalf("drift on a fresh tree: %+v, %v", d, err)
			}

			// An operator edits a live vhost by hand and reloads nginx.
			p := filepath.Join(e.dir, "current", "vhosts", "v0000.conf")
			orig, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			edited := strings.Replace(string(orig), "gen=1", "gen=999", 1)
			if err := os.WriteFile(p, []byte(edited), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(e.dir, "current", "vhosts", "extra.conf"), []byte("# hand-made\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := e.managed.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			serves(t, e.ports.vhost, "gen=999")

			d, err := e.applier.CheckDrift(context.Background())
			if err != nil {
				t.Fatalf("check drift: %v", err)
			}
			if d == nil || len(d.Files) != 2 || d.Hash != b.Hash {
				t.Fatalf("drift %+v, want 2 files of %s", d, b.Hash[:12])
			}
			if d.Files[0].Path != "vhosts/extra.conf" || d.Files[0].Kind != agent.Added ||
				d.Files[1].Path != "vhosts/v0000.conf" || d.Files[1].Kind != agent.Modified {
				t.Errorf("drift files %+v", d.Files)
			}
			diff := d.Files[1].Diff
			for _, want := range []string{"--- a/vhosts/v0000.conf", "+++ b/vhosts/v0000.conf", "-    location / { return 200 \"gen=1 vhost=0\\n\"; }", "+    location / { return 200 \"gen=999 vhost=0\\n\"; }"} {
				if !strings.Contains(diff, want) {
					t.Errorf("diff lacks %q:\n%s", want, diff)
				}
			}
			t.Logf("diff:\n%s", d.Diff())

			switch tc.policy {
			case agent.DriftAlert:
				if d.Reverted {
					t.Error("alert policy reverted")
				}
				if got, _ := os.ReadFile(p); string(got) != edited {
					t.Error("alert policy touched the file")
				}
				serves(t, e.ports.vhost, "gen=999")
			case agent.DriftRevert:
				if !d.Reverted {
					t.Error("revert policy did not revert")
				}
				if got, _ := os.ReadFile(p); string(got) != string(orig) {
					t.Errorf("file not restored:\n%s", got)
				}
				if _, err := os.Stat(filepath.Join(e.dir, "current", "vhosts", "extra.conf")); !os.IsNotExist(err) {
					t.Errorf("added file not removed: %v", err)
				}
				serves(t, e.ports.vhost, "gen=1")
				if d, err := e.applier.CheckDrift(context.Background()); err != nil || d != nil {
					t.Errorf("drift after revert: %+v, %v", d, err)
				}
			}
		})
	}
}

func TestRunDriftReports(t *testing.T) {
	found := make(chan *agent.Drift, 1)
	e := newEnv(t, func(c *agent.Config) {
		c.OnDrift = func(d *agent.Drift) {
			select {
			case found <- d:
			default: // one report is all the test needs
			}
		}
	})
	mustApply(t, e.applier, bundle(t, e.ports, 1, 1))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); e.applier.RunDrift(ctx, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()

	if err := os.Remove(filepath.Join(e.dir, "current", "vhosts", "v0000.conf")); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-found:
		if len(d.Files) != 1 || d.Files[0].Kind != agent.Removed || !strings.Contains(d.Files[0].Diff, "+++ /dev/null") {
			t.Errorf("drift %+v", d.Files)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunDrift reported nothing within 10 s")
	}
}
