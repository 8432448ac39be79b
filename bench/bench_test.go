package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/pki"
)

// The scenarios run the nxmesh binary as hub and relays; the test binary
// is not one, so it is built once, by the first test that needs it.
var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	binDir    string
)

// TestMain removes the binary after the tests; when it returns, the test
// wrapper exits with m.Run's result.
func TestMain(m *testing.M) {
	m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
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

	res := runPush(t, ctx, Config{
		Scenario: ScenarioPush, Binary: bin, Agents: n, Relays: 2, Pushes: 2,
		WorkDir: workDir, Timeout: 20 * time.Second, Progress: logWriter{t},
	}, nil)
	if res.Config.AgentProcs != 1 {
		t.Errorf("%d agent processes, want 1: %d agents fit its open files limit", res.Config.AgentProcs, n)
	}
	if res.Pushes[0].Hash == res.Pushes[1].Hash {
		t.Errorf("both pushes acked hash %s: the second push changed nothing", res.Pushes[0].Hash)
	}

	// A second run on the same work directory: nothing to enroll.
	res, err := Run(ctx, Config{
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

// runPush runs cfg (a push scenario) and checks, before the daemons stop,
// every ack against the hub (checkAgainstHub) after during, when set, has
// looked at the running env. Every round must count every agent acked,
// with ordered latencies.
func runPush(t *testing.T, ctx context.Context, cfg Config, during func(e *env)) *Result {
	t.Helper()
	var hubChecked bool
	cfg.beforeStop = func(e *env) error {
		hubChecked = true
		if during != nil {
			during(e)
		}
		checkAgainstHub(t, ctx, e)
		return nil
	}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("push scenario: %v", err)
	}
	if !hubChecked {
		t.Fatal("the hub was not checked before the run stopped")
	}
	if len(res.Pushes) != cfg.Pushes {
		t.Fatalf("%d push rounds, want %d", len(res.Pushes), cfg.Pushes)
	}
	n := cfg.Agents
	for _, p := range res.Pushes {
		if p.Acked != n || p.Agents != n || p.Latency.Count != n {
			t.Errorf("push %d: acked %d of %d with %d latencies, want %d each", p.Round, p.Acked, p.Agents, p.Latency.Count, n)
		}
		// Every agent runs the previous revision's bundle, so the
		// change reaches each as the files that changed.
		if p.Deltas != n || p.WholeAsked != 0 {
			t.Errorf("push %d: %d agents built the bundle from a delta and %d asked for it whole; want all %d from a delta", p.Round, p.Deltas, p.WholeAsked, n)
		}
		if p.Hash == "" || p.Revision <= 0 {
			t.Errorf("push %d: hash %q, revision %d", p.Round, p.Hash, p.Revision)
		}
		// The push's CPU time is real work of the processes in the
		// window, which no number of cores can exceed.
		if p.CPUPerAgentUs <= 0 || p.BusyCores <= 0 || p.BusyCores > 1.05*float64(runtime.NumCPU()) {
			t.Errorf("push %d: %v us of CPU per agent, %v cores busy (of %d)", p.Round, p.CPUPerAgentUs, p.BusyCores, runtime.NumCPU())
		}
		// A delta to 200 agents can be acked by most of them before the
		// API's answer reaches the bench: those count as 0 ms, and the
		// run says so.
		l := p.Latency
		if !(l.P50 >= 0 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max && l.Max == p.LastAckMs) {
			t.Errorf("push %d: latencies negative or not ordered: p50 %v p90 %v p99 %v max %v last %v", p.Round, l.P50, l.P90, l.P99, l.Max, p.LastAckMs)
		}
		if early := fmt.Sprintf("push %d: ", p.Round); l.P50 == 0 && !slices.ContainsFunc(res.Notes, func(n string) bool {
			return strings.HasPrefix(n, early) && strings.Contains(n, "before the API's answer")
		}) {
			t.Errorf("push %d: most acks counted as 0 ms, and no note says they came before the API's answer", p.Round)
		}
	}
	checkMeasured(t, res)
	return res
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
	if c.Counts.Applied != e.cfg.Agents || !c.Done {
		t.Errorf("hub convergence of revision %d: %+v, want %d applied and done", e.rev, c.Counts, e.cfg.Agents)
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
	states, err := e.ag.states(ctx, e.start)
	if err != nil {
		t.Fatal(err)
	}
	if len(states) != e.cfg.Agents || len(e.ag.ids) != e.cfg.Agents {
		t.Fatalf("%d agent states of %d agents, want %d", len(states), len(e.ag.ids), e.cfg.Agents)
	}
	for i, st := range states {
		id := e.ag.ids[i]
		a, ok := byID[id]
		if !ok {
			t.Errorf("agent %s: unknown to the hub", id)
			continue
		}
		if a.DesiredHash == "" || a.AppliedHash != a.DesiredHash {
			t.Errorf("agent %s: hub says applied %q, desired %q", id, a.AppliedHash, a.DesiredHash)
		}
		if st.Live != a.DesiredHash {
			t.Errorf("agent %s: runs %q, the hub assigned %q", id, st.Live, a.DesiredHash)
		}
		if _, ok := st.ackSince(a.DesiredHash, e.start.UnixNano()); !ok {
			t.Errorf("agent %s: never reported the hash %q the hub assigned it", id, a.DesiredHash)
		}
		if a.DesiredHash != last.Hash {
			t.Errorf("agent %s: hub assigned %q, the last push counted acks of %q", id, a.DesiredHash, last.Hash)
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

// TestAgentProcesses runs the push scenario with its agents in two agent
// processes beside the bench: every agent counted as acked must have
// acked the hash the hub assigned it, as in one process, and the agent
// processes must end with the run.
func TestAgentProcesses(t *testing.T) {
	bin := nxmeshBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const n = 200

	var procs []*proc
	res := runPush(t, ctx, Config{
		Scenario: ScenarioPush, Binary: bin, Agents: n, Relays: 2, Pushes: 1, AgentProcs: 2,
		WorkDir: t.TempDir(), Timeout: 20 * time.Second, Progress: logWriter{t},
	}, func(e *env) {
		procs = e.ag.procs()
		if len(e.ag.pids()) != 2 {
			t.Errorf("%d agent processes running, want 2", len(e.ag.pids()))
		}
	})
	if res.Config.AgentProcs != 2 {
		t.Errorf("result says %d agent processes, want 2", res.Config.AgentProcs)
	}
	for _, p := range procs {
		if p.pid() != 0 {
			t.Errorf("%s still runs after the run", p.name)
		}
	}
	if notes := strings.Join(res.Notes, "\n"); strings.Contains(notes, "killed") {
		t.Errorf("an agent process had to be killed:\n%s", notes)
	}
}

// TestAgentProcessEndsWithItsInput starts an agent process the way the
// bench does and closes its input, as the bench does when it stops or
// dies: the process must exit by itself, successfully.
func TestAgentProcessEndsWithItsInput(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	p := &proc{name: "agents-1", bin: nxmeshBinary(t), args: []string{"bench-agents"}, pipes: true, logPath: filepath.Join(dir, "agents-1.log")}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	defer p.kill()
	enc, dec := json.NewEncoder(p.stdin), json.NewDecoder(p.stdout)
	cfg := workerConfig{Identities: filepath.Join(dir, "agents.pem"), RootPEM: string(pki.EncodeCertsPEM(ca.root)), RelayURLs: []string{"wss://127.0.0.1:1/v1/agent"}, SourceAddrs: 1}
	if err := enc.Encode(cfg); err != nil {
		t.Fatal(err)
	}
	var ev workerEvent
	if err := dec.Decode(&ev); err != nil || ev.Kind != evReady || ev.Status == nil {
		t.Fatalf("first event %+v (%v), want ready with a status; log:\n%s", ev, err, tail(p.logPath, 20))
	}
	if err := enc.Encode(workerCmd{Op: opStart, Seq: 7}); err != nil {
		t.Fatal(err)
	}
	for ev.Kind != evReply {
		ev = workerEvent{}
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("no reply to start: %v; log:\n%s", err, tail(p.logPath, 20))
		}
	}
	if ev.Seq != 7 {
		t.Errorf("reply to command 7 carries seq %d", ev.Seq)
	}
	p.stdin.Close()
	select {
	case <-p.exited():
	case <-time.After(10 * time.Second):
		t.Fatalf("the agent process still runs 10 s after its input closed; log:\n%s", tail(p.logPath, 20))
	}
	p.mu.Lock()
	werr := p.werr
	p.mu.Unlock()
	if werr != nil {
		t.Errorf("agent process exited with %v; log:\n%s", werr, tail(p.logPath, 20))
	}
}
