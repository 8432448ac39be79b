package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// gcPercent is the bench's GOGC while it runs.
const gcPercent = 400

// env is one run in progress: the daemons, the simulated agents, the
// sampler, and the result being filled.
type env struct {
	cfg   *Config
	res   *Result
	start time.Time
	cl    *cluster
	ag    *swarm
	smp   *sampler
	nonce string // makes every push of every run a real change
	rev   int64  // the workspace revision the agents should run
	// nextAsk is when converged may ask the hub again.
	nextAsk time.Time
	// hubSays is the hub's last convergence answer, for the progress line.
	hubSays atomic.Value

	// baseline is each daemon before the agents connected, for memory and
	// CPU per agent.
	baseline map[string]procSample
	// agentProcs is how many agent processes run the agents.
	agentProcs int
}

// Run runs the scenario cfg names against a hub and relays it starts, and
// returns what it measured. When it fails midway, the Result holds what
// was measured until then and the error says what failed. It stops every
// process it started before it returns, also when ctx ends.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// The simulated agents hold about 100 KB each; collecting that heap
	// after every few handshakes would take CPU from the daemons being
	// measured. Memory is the cheaper thing to spend here.
	defer debug.SetGCPercent(debug.SetGCPercent(gcPercent))
	e := &env{
		cfg:   &cfg,
		start: time.Now(),
		nonce: strconv.FormatInt(time.Now().UnixNano(), 36),
	}
	e.res = &Result{
		Scenario: cfg.Scenario,
		Started:  e.start,
		Config: RunConfig{
			Agents:            cfg.Agents,
			Relays:            cfg.Relays,
			HeartbeatInterval: millis(cfg.HeartbeatInterval),
			SourceAddrs:       cfg.SourceAddrs,
			Database:          cfg.database(),
		},
		Series: []Sample{},
	}
	err := e.run(ctx)
	e.res.Finished = time.Now()
	if e.smp != nil {
		e.res.Series = e.smp.samples()
	}
	return e.res, err
}

func (e *env) note(format string, args ...any) {
	e.res.Notes = append(e.res.Notes, fmt.Sprintf(format, args...))
}

// run sets up, runs the scenario and tears down.
func (e *env) run(ctx context.Context) (err error) {
	cfg := e.cfg
	// Every agent is an open connection in its agent process and in its
	// relay. Ask for room for all of them in the bench, plus a few
	// thousand for files, API connections and reconnects in flight; where
	// the hard limit is lower and cannot be raised, the agents are spread
	// over agent processes, each under the limit (planAgentProcs).
	want := uint64(cfg.Agents) + 4096
	limit, raiseErr := raiseFileLimit(want)
	procs, err := planAgentProcs(cfg.Agents, cfg.Relays, cfg.AgentProcs, limit)
	if err != nil {
		if raiseErr != nil {
			return fmt.Errorf("%w (the bench cannot %v)", err, raiseErr)
		}
		return err
	}
	e.agentProcs = procs
	e.res.Config.AgentProcs = procs
	switch {
	case procs > 1 && cfg.AgentProcs == 0:
		e.note("open files limit is %s (the bench cannot %v): the agents ran in %d agent processes of about %s each", groupInt(int(limit)), raiseErr, procs, groupInt(ceilDiv(cfg.Agents, procs)))
	case procs > 1:
		e.note("the agents ran in %d agent processes of about %s each (--agent-procs)", procs, groupInt(ceilDiv(cfg.Agents, procs)))
	case raiseErr != nil:
		e.note("open files limit is %d, a little below the %d asked for: %v", limit, want, raiseErr)
	}
	// After raising the limit, so that the report shows the one in force.
	e.res.Machine = CollectMachine(cfg.Version)

	if err := e.prepareWorkDir(); err != nil {
		return err
	}
	// Deferred in this order, sampling stops before the daemons do.
	defer e.teardown()
	stopSampling := func() {}
	defer func() { stopSampling() }()

	if err := e.setUp(ctx); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { e.smp.run(sctx) })
	wg.Go(func() { e.smp.progress(sctx, cfg.Progress) })
	if cfg.ProfileDir != "" {
		pr := &profiler{dir: cfg.ProfileDir, phase: e.smp.phaseNow}
		wg.Go(func() { pr.run(sctx, append(e.cl.procs(), e.ag.procs()...)) })
		e.note("CPU profiles of every process, in %s windows, are in %s", profileWindow, cfg.ProfileDir)
	}
	stopSampling = func() {
		cancel()
		wg.Wait()
	}

	err = e.scenario(ctx)
	if err == nil {
		err = e.cl.checkAlive()
	}
	if err == nil && cfg.beforeStop != nil {
		err = cfg.beforeStop(e)
	}
	return err
}

// prepareWorkDir creates the work directory, or empties it for --fresh.
func (e *env) prepareWorkDir() error {
	dir := e.cfg.WorkDir
	if e.cfg.Fresh {
		if err := wipeWorkDir(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		return fmt.Errorf("bench work directory: %w", err)
	}
	if e.cfg.ProfileDir != "" {
		if err := os.MkdirAll(e.cfg.ProfileDir, 0o755); err != nil {
			return fmt.Errorf("profile directory: %w", err)
		}
	}
	return nil
}

// wipeWorkDir removes what a run keeps in dir: the hub's data, the relays'
// state and the agents' identities. Logs and reports stay.
func wipeWorkDir(dir string) error {
	for _, name := range []string{"hub", "relays", "agents.pem"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("bench work directory: %w", err)
		}
	}
	return nil
}

// setUp starts the hub, gets an identity for every agent (from the cache
// in the work directory where it can), starts the relays and the sampler.
func (e *env) setUp(ctx context.Context) error {
	cfg := e.cfg
	hubReused := fileExists(filepath.Join(cfg.WorkDir, "hub", "ca", "root.pem"))
	progress := func(s string) { fmt.Fprintln(cfg.Progress, "nxmesh bench: "+s) }
	progress(fmt.Sprintf("starting the hub (%s, work directory %s)", cfg.database(), cfg.WorkDir))
	cl, err := startHub(ctx, cfg)
	if err != nil {
		return err
	}
	e.cl = cl

	cached, stale, err := loadIdentities(identitiesFile(cfg.WorkDir), cl.roots)
	if err != nil {
		return err
	}
	if stale > 0 && hubReused && cfg.DatabaseURL == "" {
		// Certificates a day old, or of another hub: the hub's records of
		// those agents would only weigh on it. Start over.
		progress(fmt.Sprintf("%d cached agent certificates expire soon or belong to another hub: starting over with a new hub", stale))
		e.note("discarded the hub data and %d agent certificates in %s (expiring or of another hub) and started over", stale+len(cached), cfg.WorkDir)
		cl.stop()
		e.cl = nil
		if err := wipeWorkDir(cfg.WorkDir); err != nil {
			return err
		}
		if cl, err = startHub(ctx, cfg); err != nil {
			return err
		}
		e.cl = cl
		hubReused, cached = false, nil
	}
	var reused []string
	if hubReused {
		reused = append(reused, "the hub's data")
	}
	ids := cached
	if len(ids) > cfg.Agents {
		ids = ids[:cfg.Agents]
	}
	if len(ids) > 0 {
		reused = append(reused, fmt.Sprintf("%d agent certificates", len(ids)))
	}
	if missing := cfg.Agents - len(ids); missing == 0 && stale > 0 {
		// Agent processes read their share of ids from the cache by
		// position: it must hold exactly the usable identities, in order.
		if err := saveIdentities(identitiesFile(cfg.WorkDir), cached); err != nil {
			return err
		}
	} else if missing > 0 {
		t0 := time.Now()
		last := time.Now()
		minted, err := mintIdentities(ctx, cl.api, missing, cfg.Enrollers, map[string]string{"bench": "sim"}, func(done int) {
			if time.Since(last) >= 5*time.Second || done == missing {
				last = time.Now()
				progress(fmt.Sprintf("enrolled %d of %d agents", done, missing))
			}
		})
		if err != nil {
			return err
		}
		took := time.Since(t0)
		e.note("enrolled %d agents through the hub's API in %s (%.0f/s, %d at a time), each with its own key and certificate",
			missing, took.Round(time.Millisecond), float64(missing)/took.Seconds(), cfg.Enrollers)
		ids = append(ids, minted...)
		// Fewer cached than needed: ids holds every cached one.
		if err := saveIdentities(identitiesFile(cfg.WorkDir), ids); err != nil {
			return err
		}
	}
	enrolled, err := cl.startRelays(ctx)
	if err != nil {
		return err
	}
	if kept := cfg.Relays - enrolled; kept > 0 {
		reused = append(reused, fmt.Sprintf("%d relay identities", kept))
	}
	if len(reused) > 0 {
		msg := "reused from " + cfg.WorkDir + ": " + joinAnd(reused) + " (--fresh starts over)"
		progress(msg)
		e.note("%s", msg)
	}
	urls := make([]string, len(cl.relays))
	for i, r := range cl.relays {
		urls[i] = r.agentURL()
	}
	if e.agentProcs > 1 {
		progress(fmt.Sprintf("starting %d agent processes of about %d agents each", e.agentProcs, ceilDiv(cfg.Agents, e.agentProcs)))
	}
	if e.ag, err = startSwarm(ctx, cfg, e.agentProcs, ids, urls, cl.rootPEM); err != nil {
		return err
	}
	e.smp = &sampler{
		start:  e.start,
		procs:  cl.procs,
		agents: e.ag.pids,
		conn:   func() int { return e.connected() },
		phase:  "starting",
	}
	return nil
}

// teardown stops the agents, then the relays and the hub.
func (e *env) teardown() {
	if e.ag != nil {
		if err := e.ag.stop(); err != nil {
			e.note("%v", err)
		}
	}
	if e.cl != nil {
		e.cl.stop()
	}
}

// connected is how many agents have a session now.
func (e *env) connected() int {
	return int(e.ag.counts().Connected)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// joinAnd joins items as a sentence: "a, b and c".
func joinAnd(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	out := items[0]
	for _, it := range items[1 : len(items)-1] {
		out += ", " + it
	}
	return out + " and " + items[len(items)-1]
}
