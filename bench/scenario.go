package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// idleSettle is how long the fleet sits idle after connecting before the
// daemons' memory is read: long enough for the bundle fan-out and the
// handshakes' garbage to be behind them.
const idleSettle = 2 * time.Second

// stormConvergeWait bounds the wait for the hub after a storm (or the
// run's Timeout, when shorter).
const stormConvergeWait = time.Minute

// scenario runs the configured scenario; every one starts with connect.
func (e *env) scenario(ctx context.Context) error {
	if err := e.connect(ctx); err != nil {
		return err
	}
	switch e.cfg.Scenario {
	case ScenarioPush:
		return e.pushes(ctx)
	case ScenarioStorm:
		return e.storms(ctx)
	case ScenarioHeartbeat:
		return e.heartbeat(ctx)
	case ScenarioStandard:
		if err := e.pushes(ctx); err != nil {
			return err
		}
		return e.storms(ctx)
	}
	return nil
}

// siteYAML is the workspace every push changes: one Upstream and one
// VirtualHost that selects every agent, marked with version. A small
// change, as the targets ask.
func siteYAML(version string) string {
	return fmt.Sprintf(`apiVersion: nxmesh/v1
kind: Upstream
metadata: {name: bench-app}
spec:
  servers: [{address: "127.0.0.1:9"}]
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata: {name: bench-site}
spec:
  serverNames: [bench.local]
  listen: [{port: 8080}]
  headers:
    response:
      add: {X-Bench-Version: %q}
  locations:
    - path: /
      upstream: bench-app
`, version)
}

// connect starts every agent, waits until all have a session and the hub
// counts all of them applied, then reads the daemons' memory and CPU.
func (e *env) connect(ctx context.Context) error {
	cfg, api := e.cfg, e.cl.api
	e.smp.setPhase("base revision", nil)
	ans, err := api.apply(ctx, siteYAML("base"), "nxmesh bench: the site every agent starts with")
	if err != nil {
		return err
	}
	e.rev = ans.Revision
	e.baseline = e.readProcs()

	cr := &ConnectResult{Agents: cfg.Agents}
	e.res.Connect = cr
	t0 := time.Now()
	if err := e.ag.start(ctx, cfg.ConnectRate); err != nil {
		return err
	}
	e.smp.setPhase("connect", func() string { return fmt.Sprintf("%d/%d agents connected", e.connected(), cfg.Agents) })
	err = e.wait(ctx, "every agent to connect", 20*time.Millisecond, func() (bool, error) {
		return e.connected() >= cfg.Agents, nil
	})
	cr.Connected = e.connected()
	if err != nil {
		return err
	}
	// Only the sessions matter here: no results (since now).
	states, err := e.ag.states(ctx, time.Now())
	if err != nil {
		return err
	}
	var last int64
	for _, st := range states {
		last = max(last, st.ConnectAt)
	}
	took := time.Unix(0, last).Sub(t0)
	cr.DurationMs = millis(took)
	cr.HandshakesPerS = float64(cfg.Agents) / took.Seconds()
	if err := e.waitConverged(ctx, "the hub to count every agent applied", e.rev, 50*time.Millisecond); err != nil {
		return err
	}
	e.smp.setPhase("idle", nil)
	if err := sleep(ctx, idleSettle); err != nil {
		return err
	}
	now := e.readProcs()
	if cfg.ProfileDir != "" {
		snapshotProfiles(ctx, cfg.ProfileDir, "idle", e.cl.procs())
	}
	perRelay := make([]int, len(e.cl.relays))
	for i := range cfg.Agents {
		perRelay[relayOf(i, len(perRelay))]++
	}
	add := func(p *proc, agents int) ProcessStats {
		ps := ProcessStats{Name: p.name, Agents: agents}
		r, ok := now[p.name]
		if !ok {
			return ps
		}
		b := e.baseline[p.name]
		ps.RSSBytes = r.RSS
		ps.CPUSeconds = (r.CPU - b.CPU).Seconds()
		if agents > 0 {
			ps.RSSPerAgentByte = float64(r.RSS-b.RSS) / float64(agents)
		}
		cr.Processes = append(cr.Processes, ps)
		return ps
	}
	hub := add(e.cl.hub, cfg.Agents)
	var relayRSS, relayCPU float64
	for i, r := range e.cl.relays {
		ps := add(r.proc, perRelay[i])
		relayRSS = max(relayRSS, ps.RSSPerAgentByte)
		relayCPU += ps.CPUSeconds
	}

	e.figure("agents connected", float64(cr.Connected), "", nil)
	e.figure("time to all connected", cr.DurationMs, "ms", nil)
	e.figure("handshake rate", cr.HandshakesPerS, "/s", nil)
	e.figure("relay RSS per idle agent", relayRSS, "bytes/agent",
		&target{"<= 24 KB at 50,000 agents", 50000, func(v float64) bool { return v <= 24000 }})
	e.figure("hub RSS per agent", hub.RSSPerAgentByte, "bytes/agent", nil)
	e.figure("relay CPU per connecting agent", relayCPU*1000/float64(cfg.Agents), "ms/agent", nil)
	e.figure("hub CPU per connecting agent", hub.CPUSeconds*1000/float64(cfg.Agents), "ms/agent", nil)
	e.note("RSS per agent is the growth of a process's resident memory from before the agents connected to %s after the hub counted all of them applied, divided by its agents", idleSettle)
	// The simulated agents' garbage is collected between phases and
	// rounds, not in the middle of one: a collection of an agent
	// process's gigabytes took more than a second of the 2 cores the
	// daemons measured share, where ten thousand real agents would each
	// collect a few kilobytes on their own machine. Their handshake
	// garbage was collected in the first push in most runs.
	if err := e.ag.collect(ctx); err != nil {
		return err
	}
	e.note("the simulated agents' processes collect their garbage after connecting and before each push and storm, outside the measured times")
	return nil
}

// pushes commits cfg.Pushes changes, one after the other.
func (e *env) pushes(ctx context.Context) error {
	e.res.Config.Pushes = e.cfg.Pushes
	var all []time.Duration
	acked, deltas := 0, 0
	for round := 1; round <= e.cfg.Pushes; round++ {
		if round > 1 {
			if err := e.ag.collect(ctx); err != nil { // see connect
				return err
			}
		}
		pr, lat, err := e.push(ctx, round)
		e.res.Pushes = append(e.res.Pushes, pr)
		all = append(all, lat...)
		acked += pr.Acked
		deltas += pr.Deltas
		if err != nil {
			return err
		}
	}
	e.pushFigures(NewLatency(all), acked, deltas)
	e.pushCostFigures()
	e.note("push latency is from the API's answer to the commit to each agent's ack (Report called with the hash the hub assigned it), over %d rounds", e.cfg.Pushes)
	return nil
}

// pushFigures adds the push figures. The two push targets judge
// different figures: at 10,000 agents the p99 of every ack, at 50,000 the
// last ack of any push.
func (e *env) pushFigures(l Latency, acked, deltas int) {
	var p99Target, maxTarget *target
	if e.cfg.Agents >= 50000 {
		maxTarget = &target{"<= 3,000 ms at 50,000 agents", 50000, func(v float64) bool { return v <= 3000 }}
	} else {
		p99Target = &target{"<= 1,000 ms at 10,000 agents", 10000, func(v float64) bool { return v <= 1000 }}
	}
	want := e.cfg.Agents * e.cfg.Pushes
	e.figure("acks of the pushed hash", float64(acked), "", &target{fmt.Sprintf("= %d", want), 0, func(v float64) bool { return int(v) == want }})
	e.figure("pushed bundles built from a delta", float64(deltas), "", nil)
	e.figure("push p50", l.P50, "ms", nil)
	e.figure("push p99", l.P99, "ms", p99Target)
	e.figure("push max (last ack)", l.Max, "ms", maxTarget)
}

// pushCostFigures adds the pushes' CPU time per agent, the mean of the
// rounds.
func (e *env) pushCostFigures() {
	if len(e.res.Pushes) == 0 {
		return
	}
	var cpu float64
	for _, p := range e.res.Pushes {
		cpu += p.CPUPerAgentUs
	}
	e.figure("push CPU per agent", cpu/float64(len(e.res.Pushes)), "us", nil)
	e.note("push CPU per agent is the CPU time of the hub, the relays and the simulated agents from the API's answer to the last agent's report, per agent")
}

// push commits one change and measures, for every agent, the time from the
// API's answer to its ack of the hash the hub assigned it. lat has one
// sample per agent that acked.
func (e *env) push(ctx context.Context, round int) (pr PushResult, lat []time.Duration, err error) {
	n := e.cfg.Agents
	pr = PushResult{Round: round, Agents: n}
	// Every agent process takes each agent's hash now, and counts the
	// agents that report another one from sent on.
	sent := time.Now()
	before := e.ag.counts()
	mark, err := e.ag.mark(ctx, sent, nil)
	if err != nil {
		return pr, nil, err
	}
	ans, err := e.cl.api.apply(ctx, siteYAML(fmt.Sprintf("%s-%d", e.nonce, round)), fmt.Sprintf("nxmesh bench: push %d", round))
	answered, cpu0 := time.Now(), e.cpuNow()
	pr.AnsweredMs = millis(answered.Sub(e.start))
	if err != nil {
		return pr, nil, err
	}
	if !ans.Changed {
		return pr, nil, fmt.Errorf("push %d: the hub stored no new revision", round)
	}
	pr.Revision, e.rev = ans.Revision, ans.Revision

	// Wait until every agent reported a result for a new hash; which hash
	// it should be is the hub's to say, below.
	e.smp.setPhase(fmt.Sprintf("push %d/%d", round, e.cfg.Pushes), func() string {
		reported, _, _ := e.ag.watched(mark)
		return fmt.Sprintf("revision %d, about %d/%d agents acked", ans.Revision, reported, n)
	})
	waitErr := e.wait(ctx, fmt.Sprintf("push %d: every agent to ack", round), 5*time.Millisecond, func() (bool, error) {
		reported, _, ok := e.ag.watched(mark)
		return ok && reported == n, nil
	})
	if cpu := e.cpuNow() - cpu0; n > 0 {
		pr.CPUPerAgentUs = float64(cpu) / float64(time.Microsecond) / float64(n)
		pr.BusyCores = float64(cpu) / float64(time.Since(answered))
	}
	states, err := e.ag.states(ctx, sent)
	if err != nil {
		return pr, nil, errors.Join(waitErr, err)
	}
	after := e.ag.counts()
	pr.Deltas, pr.WholeAsked = int(after.Deltas-before.Deltas), int(after.WholeAsked-before.WholeAsked)

	// The hub's word: the hash each agent should now run. Only a result
	// for exactly that hash counts as an ack.
	hubAgents, err := e.cl.api.agents(ctx)
	if err != nil {
		return pr, nil, err
	}
	desired := make(map[string]string, len(hubAgents))
	for _, a := range hubAgents {
		desired[a.ID] = a.DesiredHash
	}
	hashes := map[string]int{}
	early := 0
	for i, st := range states {
		h := desired[e.ag.ids[i]]
		at, ok := st.ackSince(h, sent.UnixNano())
		if h == "" || !ok {
			continue
		}
		hashes[h]++
		pr.Acked++
		d := at.Sub(answered)
		if d < 0 {
			// Acked before the API's answer reached the bench.
			d, early = 0, early+1
		}
		lat = append(lat, d)
	}
	for h, n := range hashes {
		if n > hashes[pr.Hash] {
			pr.Hash = h
		}
	}
	if early > 0 {
		e.note("push %d: %d agents acked before the API's answer arrived; counted as 0 ms", round, early)
	}
	pr.Latency = NewLatency(lat)
	pr.LastAckMs = pr.Latency.Max
	if waitErr != nil {
		return pr, lat, waitErr
	}
	if pr.Acked != n {
		return pr, lat, fmt.Errorf("push %d: %d of %d agents acked the hash the hub assigned them", round, pr.Acked, n)
	}
	// The next round starts once the hub, too, knows every ack.
	err = e.waitConverged(ctx, fmt.Sprintf("push %d: the hub to count every agent applied", round), pr.Revision, 50*time.Millisecond)
	pr.HubConvergedMs = millis(time.Since(answered))
	return pr, lat, err
}

// storms kills and restarts relays under their agents, once per TLS
// resumption setting.
func (e *env) storms(ctx context.Context) error {
	for i, resume := range e.cfg.stormModes() {
		if err := e.ag.collect(ctx); err != nil { // see connect
			return err
		}
		sr, err := e.storm(ctx, i+1, resume)
		e.res.Storms = append(e.res.Storms, sr)
		if err != nil {
			return err
		}
		mode := "off"
		if resume {
			mode = "on"
			e.res.Config.TLSResumption = true
		}
		e.figure("storm back, resumption "+mode, sr.BackMs, "ms", nil)
		converged := &target{"<= 10,000 ms at 10,000 agents", 10000, func(v float64) bool { return v <= 10000 }}
		if !sr.Converged {
			converged = &target{"<= 10,000 ms (did not converge)", 0, func(float64) bool { return false }}
		}
		e.figure("storm converged, resumption "+mode, sr.ConvergedMs, "ms", converged)
		e.figure("storm resumed handshakes, resumption "+mode, float64(sr.Resumed), "", nil)
	}
	e.res.Config.Storms = len(e.res.Storms)
	e.note("a storm SIGKILLs %d of %d relays and restarts them at once on the same port and state; back is until each of their agents has a session again, converged until the hub also counts every agent applied on a new relay session", e.cfg.StormRelays, e.cfg.Relays)
	return nil
}

// storm is one round: kill, restart, wait for the agents and the hub.
func (e *env) storm(ctx context.Context, round int, resume bool) (StormResult, error) {
	if err := e.waitConverged(ctx, "the hub to count every agent applied before the storm", e.rev, 50*time.Millisecond); err != nil {
		return StormResult{Round: round, TLSResumption: resume}, err
	}
	sr := StormResult{Round: round, TLSResumption: resume}
	if err := e.ag.setResumption(ctx, resume); err != nil {
		return sr, err
	}
	victims := e.cl.relays[:e.cfg.StormRelays]
	marked := make([]int, len(victims))
	for i := range victims {
		marked[i] = i
	}
	// hit are the agents of the victims (by index in the run).
	var hit []int
	for i := range e.cfg.Agents {
		if relayOf(i, len(e.cl.relays)) < len(victims) {
			hit = append(hit, i)
		}
	}
	sr.Agents = len(hit)
	// Every agent process takes each agent's session count now, and
	// counts the victims' agents that have a newer session.
	mark, err := e.ag.mark(ctx, time.Now(), marked)
	if err != nil {
		return sr, err
	}
	resumed := e.ag.counts().Resumed
	mode := map[bool]string{false: "off", true: "on"}[resume]
	e.smp.setPhase(fmt.Sprintf("storm %d (TLS resumption %s)", round, mode), nil)

	t0 := time.Now()
	for _, r := range victims {
		r.kill()
	}
	for _, r := range victims {
		if err := r.start(); err != nil {
			return sr, err
		}
	}
	e.smp.setPhase(fmt.Sprintf("storm %d (TLS resumption %s)", round, mode), func() string {
		_, back, _ := e.ag.watched(mark)
		return fmt.Sprintf("about %d/%d agents back", back, len(hit))
	})
	err = e.wait(ctx, fmt.Sprintf("storm %d: every agent back", round), 10*time.Millisecond, func() (bool, error) {
		_, back, ok := e.ag.watched(mark)
		return ok && back == len(hit), nil
	})
	if err != nil {
		return sr, err
	}
	e.smp.setPhase(fmt.Sprintf("storm %d (TLS resumption %s)", round, mode), e.hubLine)
	states, err := e.ag.states(ctx, time.Now())
	if err != nil {
		return sr, err
	}
	var last int64
	for _, i := range hit {
		sr.Reconnects += states[i].Reconnects
		last = max(last, states[i].ConnectAt)
	}
	sr.BackMs = millis(time.Unix(0, last).Sub(t0))
	sr.Resumed = int(e.ag.counts().Resumed - resumed)

	ids := make([]string, len(victims))
	for i, r := range victims {
		ids[i] = r.id
	}
	// The target is 10 s: a minute says enough about a hub that misses it.
	wait := min(e.cfg.Timeout, stormConvergeWait)
	err = waitFor(ctx, wait, 100*time.Millisecond, fmt.Sprintf("storm %d: the hub to count every agent applied", round), func() (bool, error) {
		if err := e.cl.checkAlive(); err != nil {
			return false, err
		}
		relays, err := e.cl.api.relays(ctx)
		if err != nil {
			return false, err
		}
		for _, id := range ids {
			if i := slices.IndexFunc(relays, func(r hubRelay) bool { return r.ID == id }); i < 0 || relays[i].ConnectedAt.Before(t0) {
				return false, nil
			}
		}
		return e.converged(ctx, e.rev)
	})
	sr.ConvergedMs = millis(time.Since(t0))
	if errors.Is(err, errTimeout) {
		// Every agent is back, yet the hub does not count them: that is a
		// result, and the rest of the run still measures something.
		e.note("storm %d: every agent was back after %.0f ms, but the hub did not count every agent applied within %s (last: %s)", round, sr.BackMs, wait, e.hubLine())
		return sr, nil
	}
	if err != nil {
		return sr, err
	}
	sr.Converged = true
	return sr, nil
}

// heartbeat lets the connected fleet heartbeat for cfg.HeartbeatDuration
// and measures what that costs the relays and the hub.
func (e *env) heartbeat(ctx context.Context) error {
	cfg := e.cfg
	e.res.Config.HeartbeatDuration = millis(cfg.HeartbeatDuration)
	writes0, err := e.cl.api.metric(ctx, "nxmesh_store_write_transactions_total")
	if err != nil {
		return err
	}
	procs0 := e.readProcs()
	hb0 := e.ag.counts().Heartbeats
	t0 := time.Now()
	e.smp.setPhase("heartbeat", func() string {
		return fmt.Sprintf("%s of %s, %d heartbeats", time.Since(t0).Truncate(time.Second), cfg.HeartbeatDuration, e.ag.counts().Heartbeats-hb0)
	})
	err = e.wait(ctx, "heartbeat phase", 100*time.Millisecond, func() (bool, error) {
		if c := e.connected(); c < cfg.Agents {
			return false, fmt.Errorf("%d of %d agents lost their session while heartbeating", cfg.Agents-c, cfg.Agents)
		}
		return time.Since(t0) >= cfg.HeartbeatDuration, nil
	})
	if err != nil {
		return err
	}
	took := time.Since(t0)
	procs1 := e.readProcs()
	hb1 := e.ag.counts().Heartbeats
	writes1, err := e.cl.api.metric(ctx, "nxmesh_store_write_transactions_total")
	if err != nil {
		return err
	}
	hr := &HeartbeatResult{
		Agents:       cfg.Agents,
		IntervalMs:   millis(cfg.HeartbeatInterval),
		DurationMs:   millis(took),
		MessagesPerS: float64(hb1-hb0) / took.Seconds(),
		DBWritesPerS: (writes1 - writes0) / took.Seconds(),
	}
	e.res.Heartbeat = hr
	var relayCores, hubCores float64
	for _, p := range e.cl.procs() {
		a, b := procs0[p.name], procs1[p.name]
		ps := ProcessStats{Name: p.name, RSSBytes: b.RSS, CPUSeconds: (b.CPU - a.CPU).Seconds()}
		cores := ps.CPUSeconds / took.Seconds()
		if p == e.cl.hub {
			ps.Agents, hubCores = cfg.Agents, cores
		} else {
			relayCores += cores
		}
		hr.CPUCoresByProcs = append(hr.CPUCoresByProcs, ps)
	}
	at15 := func(n int) string {
		return fmt.Sprintf("at %s agents every 15 s", groupInt(n))
	}
	judged := cfg.HeartbeatInterval <= 15*time.Second
	relayTarget := &target{"< 0.25 cores " + at15(50000), 50000, func(v float64) bool { return v < 0.25 }}
	writeTarget := &target{"<= 200/s " + at15(50000), 50000, func(v float64) bool { return v <= 200 }}
	if !judged {
		relayTarget.atAgents, writeTarget.atAgents = -1, -1
	}
	e.figure("relay CPU while heartbeating", relayCores, "cores", relayTarget)
	e.figure("hub CPU while heartbeating", hubCores, "cores", nil)
	e.figure("heartbeat messages", hr.MessagesPerS, "/s", nil)
	e.figure("hub database writes", hr.DBWritesPerS, "/s", writeTarget)
	e.note("heartbeat messages are counted at the agents as they send them; relay CPU is the sum over all relays; database writes are the hub's nxmesh_store_write_transactions_total over the phase")
	return nil
}

// target is what a figure is judged against, from the targets.
// atAgents is the fleet size the target is set for: a smaller run shows
// the target but does not judge it (-1: never judged, e.g. another
// heartbeat interval).
type target struct {
	text     string
	atAgents int
	met      func(float64) bool
}

// figure adds a summary figure.
func (e *env) figure(name string, v float64, unit string, t *target) {
	f := Figure{Name: name, Value: v, Unit: unit}
	if t != nil {
		f.Target = t.text
		if t.atAgents >= 0 && e.cfg.Agents >= t.atAgents {
			met := t.met(v)
			f.Met = &met
		} else {
			f.Target += " (not judged at this size)"
		}
	}
	e.res.Figures = append(e.res.Figures, f)
}

// readProcs samples every daemon now.
func (e *env) readProcs() map[string]procSample {
	out := map[string]procSample{}
	for _, p := range e.cl.procs() {
		if r, err := readProc(p.pid()); err == nil {
			out[p.name] = r
		}
	}
	return out
}

// cpuNow is the CPU time used so far by the daemons, the bench and its
// agent processes together (a process that cannot be read has exited,
// which fails the run elsewhere).
func (e *env) cpuNow() time.Duration {
	var sum time.Duration
	pids := append(e.ag.pids(), os.Getpid())
	for _, p := range e.cl.procs() {
		pids = append(pids, p.pid())
	}
	for _, pid := range pids {
		if cpu, err := threadsCPU(pid); err == nil {
			sum += cpu
		}
	}
	return sum
}

// wait is waitFor with the run's timeout, failing early when a daemon dies.
func (e *env) wait(ctx context.Context, what string, interval time.Duration, cond func() (bool, error)) error {
	return waitFor(ctx, e.cfg.Timeout, interval, what, func() (bool, error) {
		if err := e.cl.checkAlive(); err != nil {
			return false, err
		}
		if err := e.ag.checkAlive(); err != nil {
			return false, err
		}
		return cond()
	})
}

// converged says whether the hub counts every agent of the run applied on
// revision rev (agents enrolled by earlier, larger runs are offline and do
// not count).
//
// An answer costs the hub real work (about 150 ms of CPU at 10,000
// agents), so the bench asks again only after three times as long as the
// last answer took, but at most a second (what is waited for is also
// timed): waiting must not slow down what it waits for.
func (e *env) converged(ctx context.Context, rev int64) (bool, error) {
	if time.Now().Before(e.nextAsk) {
		return false, nil
	}
	t := time.Now()
	c, err := e.cl.api.convergence(ctx, rev)
	e.nextAsk = time.Now().Add(min(3*time.Since(t), time.Second))
	if err != nil {
		return false, err
	}
	e.hubSays.Store(fmt.Sprintf("hub: revision %d applied %d, pending %d, offline %d", rev, c.Counts.Applied, c.Counts.Pending, c.Counts.Offline))
	return c.Done && c.Counts.Applied >= e.cfg.Agents, nil
}

// waitConverged waits until converged, polling every interval.
func (e *env) waitConverged(ctx context.Context, what string, rev int64, interval time.Duration) error {
	e.smp.setPhase(what, e.hubLine)
	return e.wait(ctx, what, interval, func() (bool, error) { return e.converged(ctx, rev) })
}

// hubLine is what the hub said last about convergence.
func (e *env) hubLine() string {
	s, _ := e.hubSays.Load().(string)
	return s
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// groupInt is n with thousands separators.
func groupInt(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
