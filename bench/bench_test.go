package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The scenarios run the nxmesh binary as hub and relays; the test binary
// is not one, so it is built once, by the first test that needs it.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func nxmeshBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "nxmesh-bench-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "nxmesh")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/nxmesh").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build nxmesh: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// logWriter sends the progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestPushAndStorm runs the push scenario on 200 agents and two relays,
// checks every figure against what the hub says, then a storm on the same
// work directory, which must reuse the hub and the certificates.
func TestPushAndStorm(t *testing.T) {
	bin := nxmeshBinary(t)
	workDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const n = 200

	var hubChecked bool
	res, err := Run(ctx, Config{
		Scenario: ScenarioPush, Binary: bin, Agents: n, Relays: 2, Pushes: 2,
		WorkDir: workDir, Timeout: 20 * time.Second, Progress: logWriter{t},
		beforeStop: func(e *env) error {
			hubChecked = true
			checkAgainstHub(t, ctx, e)
			return nil
		},
	})
	if err != nil {
		t.Fatalf("push scenario: %v", err)
	}
	if !hubChecked {
		t.Fatal("the hub was not checked before the run stopped")
	}
	if len(res.Pushes) != 2 {
		t.Fatalf("%d push rounds, want 2", len(res.Pushes))
	}
	for _, p := range res.Pushes {
		if p.Acked != n || p.Agents != n || p.Latency.Count != n {
			t.Errorf("push %d: acked %d of %d with %d latencies, want %d each", p.Round, p.Acked, p.Agents, p.Latency.Count, n)
		}
		if p.Hash == "" || p.Revision <= 0 {
			t.Errorf("push %d: hash %q, revision %d", p.Round, p.Hash, p.Revision)
		}
		l := p.Latency
		if !(l.P50 > 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max && l.Max == p.LastAckMs) {
			t.Errorf("push %d: latencies not positive and ordered: p50 %v p90 %v p99 %v max %v last %v", p.Round, l.P50, l.P90, l.P99, l.Max, p.LastAckMs)
		}
	}
	if res.Pushes[0].Hash == res.Pushes[1].Hash {
		t.Errorf("both pushes acked hash %s: the second push changed nothing", res.Pushes[0].Hash)
	}
	checkMeasured(t, res)

	// A second run on the same work directory: nothing to enroll.
	res, err = Run(ctx, Config{
		Scenario: ScenarioStorm, Binary: bin, Agents: n, Relays: 2, StormResumption: "off",
		WorkDir: workDir, Timeout: 20 * time.Second, Progress: logWriter{t},
	})
	if err != nil {
		t.Fatalf("storm scenario: %v", err)
	}
	notes := strings.Join(res.Notes, "\n")
	if !strings.Contains(notes, "reused") || !strings.Contains(notes, fmt.Sprintf("%d agent certificates", n)) || strings.Contains(notes, "enrolled") {
		t.Errorf("second run did not say it reused the hub and %d certificates without enrolling:\n%s", n, notes)
	}
	if len(res.Storms) != 1 {
		t.Fatalf("%d storms, want 1", len(res.Storms))
	}
	s := res.Storms[0]
	if s.Agents != n || s.Reconnects < n || s.BackMs <= 0 || s.ConvergedMs < s.BackMs {
		t.Errorf("storm: %d agents, %d reconnects, back %v ms, converged %v ms; want every agent back", s.Agents, s.Reconnects, s.BackMs, s.ConvergedMs)
	}
	if !s.Converged {
		t.Errorf("storm: the hub did not count every agent applied within the timeout:\n%s", notes)
	}
	checkMeasured(t, res)
}

// checkAgainstHub checks, while the hub still runs, that every agent the
// bench counted as acked runs exactly the hash the hub assigned it.
func checkAgainstHub(t *testing.T, ctx context.Context, e *env) {
	t.Helper()
	api := e.cl.api
	c, err := api.convergence(ctx, e.rev)
	if err != nil {
		t.Fatal(err)
	}
	if c.Counts.Applied != len(e.fl.agents) || !c.Done {
		t.Errorf("hub convergence of revision %d: %+v, want %d applied and done", e.rev, c.Counts, len(e.fl.agents))
	}
	hubAgents, err := api.agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]hubAgent{}
	for _, a := range hubAgents {
		byID[a.ID] = a
	}
	last := e.res.Pushes[len(e.res.Pushes)-1]
	for _, s := range e.fl.agents {
		a, ok := byID[s.id]
		if !ok {
			t.Errorf("agent %s: unknown to the hub", s.id)
			continue
		}
		if a.DesiredHash == "" || a.AppliedHash != a.DesiredHash {
			t.Errorf("agent %s: hub says applied %q, desired %q", s.id, a.AppliedHash, a.DesiredHash)
		}
		if live, _ := s.Live(); live != a.DesiredHash {
			t.Errorf("agent %s: runs %q, the hub assigned %q", s.id, live, a.DesiredHash)
		}
		if _, ok := s.ackSince(a.DesiredHash, e.start); !ok {
			t.Errorf("agent %s: never reported the hash %q the hub assigned it", s.id, a.DesiredHash)
		}
		if a.DesiredHash != last.Hash {
			t.Errorf("agent %s: hub assigned %q, the last push counted acks of %q", s.id, a.DesiredHash, last.Hash)
		}
	}
}

// checkMeasured checks that the connect phase and the samples hold real
// measurements of real processes.
func checkMeasured(t *testing.T, res *Result) {
	t.Helper()
	cr := res.Connect
	if cr == nil || cr.Connected != res.Config.Agents || cr.DurationMs <= 0 || cr.HandshakesPerS <= 0 {
		t.Fatalf("connect phase: %+v", cr)
	}
	if len(cr.Processes) != 3 {
		t.Errorf("connect phase measured %d processes, want the hub and 2 relays", len(cr.Processes))
	}
	for _, p := range cr.Processes {
		if p.RSSBytes <= 0 || p.CPUSeconds <= 0 || p.Agents <= 0 {
			t.Errorf("process %s: RSS %d, CPU %v s, %d agents: want all positive", p.Name, p.RSSBytes, p.CPUSeconds, p.Agents)
		}
	}
	rss, cpu := map[string]bool{}, map[string]bool{}
	connected := false
	for _, s := range res.Series {
		for name, v := range s.RSS {
			rss[name] = rss[name] || v > 0
		}
		for name, v := range s.CPU {
			cpu[name] = cpu[name] || v > 0
		}
		connected = connected || s.Connected == res.Config.Agents
	}
	for _, name := range []string{"hub", "relay-1", "relay-2", benchProc} {
		if !rss[name] || !cpu[name] {
			t.Errorf("samples of %s: RSS seen %v, CPU seen %v; want both", name, rss[name], cpu[name])
		}
	}
	if !connected {
		t.Errorf("no sample saw all %d agents connected", res.Config.Agents)
	}
	if res.Machine.CPUs <= 0 || res.Started.IsZero() || !res.Finished.After(res.Started) {
		t.Errorf("machine %+v, started %v, finished %v", res.Machine, res.Started, res.Finished)
	}
}
