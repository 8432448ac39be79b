// Package fleet is the hub's side of the relay protocol: it holds the
// sessions of the relays connected to this hub (its own embedded relay
// included), computes each connected agent's desired bundle from its
// workspace's newest revision and its labels, pushes changes when a revision
// lands (debounced, so a burst of writes becomes a couple of pushes), serves
// bundle bytes, records agent status in the store with coalesced writes, and
// answers the convergence questions of the API from the store, so that any
// hub can answer them for agents connected through any other.
package fleet

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/wire"
)

// Config configures a Fleet.
type Config struct {
	// DB is the hub's store.
	DB *store.DB
	// HubID names this hub in relay records.
	HubID string
	// TrustDomain is the installation's; relays of others are refused.
	TrustDomain string
	// Debounce: a revision after a quiet spell goes to agents at once;
	// revisions that follow within Debounce (default 100 ms) wait until the
	// workspace has been quiet that long, at most MaxDelay (default 1 s)
	// under a steady stream of writes.
	Debounce, MaxDelay time.Duration
	// PollInterval is how often the hub looks for revisions other hubs
	// committed (default 1 s).
	PollInterval time.Duration
	// FlushInterval is how often agent status goes to the store
	// (default 250 ms); writes are batched per flush.
	FlushInterval time.Duration
	// RelayRefresh is how often a live relay's record is refreshed
	// (default 10 s). A relay record older than 3 refreshes is stale and
	// its agents count as offline.
	RelayRefresh time.Duration
	// SeenInterval is how often a connected agent's last_seen is written
	// without other news (default 1 min).
	SeenInterval time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
	// Logger defaults to one that discards.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Debounce, 100*time.Millisecond)
	def(&c.MaxDelay, time.Second)
	def(&c.PollInterval, time.Second)
	def(&c.FlushInterval, 250*time.Millisecond)
	def(&c.RelayRefresh, 10*time.Second)
	def(&c.SeenInterval, time.Minute)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Fleet is the hub's view of its relays and their agents. Create it with
// New, run it with Run, serve relays with ServeRelay.
type Fleet struct {
	cfg    Config
	log    *slog.Logger
	db     *store.DB
	revs   *revisions
	deltas *deltas

	kick      chan struct{} // wakes the reconciler (cap 1)
	flushKick chan struct{} // wakes the status writer (cap 1)
	wg        sync.WaitGroup

	mu sync.Mutex // guards the fields below
	// stopping is set when Run ends; no new relay sessions are accepted.
	stopping bool
	// relays are the live relay sessions by relay id.
	relays map[string]*relaySession
	// agents are the agents with a live session through one of our relays.
	agents map[string]*agentState
	// known caches enrollment facts (workspace, labels) by agent id.
	known map[string]agentInfo
	// heads are the revision each workspace's agents were last computed at.
	heads map[string]int64
	// fresh are agents whose desired bundle must be computed.
	fresh map[string]bool
	// notified are workspaces with a revision not yet pushed.
	notified map[string]notice
	// pushed is when each workspace's agents were last recomputed for a
	// new revision.
	pushed map[string]time.Time
	// status are agent status writes not yet flushed, by agent id.
	status map[string]store.AgentStatus
	// gone are ended sessions not yet written, by relay id. A session that
	// starts again on the same relay id (a restarted relay) takes its
	// agent out, or the disconnect, written after the new session's
	// status, would mark a connected agent offline.
	gone map[string]map[string]bool
	// relayWrites are relay records to write (connects, counts).
	relayWrites map[string]store.Relay
	// relayGone are relay sessions that ended, to delete.
	relayGone []string
	// pushes counts desired-bundle changes sent to relays (tests, bench).
	pushes int64

	// revokedChecked is when revocations were last polled; only the Run
	// goroutine touches it.
	revokedChecked time.Time
}

// notice is a workspace's revisions waiting to be pushed: when the first
// and the latest came, and whether the first may go at once.
type notice struct {
	first, last time.Time
	now         bool
}

// agentInfo is what enrollment recorded about an agent.
type agentInfo struct {
	ws     string
	labels map[string]string
}

// agentState is one agent with a live session through a relay of ours.
type agentState struct {
	id, ws  string
	relay   *relaySession
	applied string
	// desired is the hash last assigned to the agent through its relay.
	desired string
	// seenWritten is when last_seen was last queued for writing.
	seenWritten time.Time
}

// New returns a Fleet; it does nothing until Run.
func New(cfg Config) (*Fleet, error) {
	cfg.setDefaults()
	if cfg.DB == nil {
		return nil, errors.New("fleet: DB is required")
	}
	revs := &revisions{db: cfg.DB, sets: map[string][]*revisionSet{}}
	return &Fleet{
		cfg: cfg, log: cfg.Logger, db: cfg.DB,
		revs:        revs,
		deltas:      &deltas{revs: revs, m: map[deltaKey]*delta{}},
		kick:        make(chan struct{}, 1),
		flushKick:   make(chan struct{}, 1),
		relays:      map[string]*relaySession{},
		agents:      map[string]*agentState{},
		known:       map[string]agentInfo{},
		heads:       map[string]int64{},
		fresh:       map[string]bool{},
		notified:    map[string]notice{},
		pushed:      map[string]time.Time{},
		status:      map[string]store.AgentStatus{},
		gone:        map[string]map[string]bool{},
		relayWrites: map[string]store.Relay{},
	}, nil
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Notify tells the fleet that ws has a new revision; its agents get it once
// the workspace has been quiet for Debounce (at most MaxDelay after the
// first notification). Revisions from other hubs are found by polling.
func (f *Fleet) Notify(ws string) {
	now := f.cfg.Now()
	f.mu.Lock()
	n, ok := f.notified[ws]
	if !ok {
		n.first = now
		// A change after a quiet spell goes at once; only what follows
		// it within Debounce waits (leading and trailing edge).
		n.now = now.Sub(f.pushed[ws]) >= f.cfg.Debounce
	}
	n.last = now
	f.notified[ws] = n
	f.mu.Unlock()
	wake(f.kick)
}

// Stats are the fleet's counters for metrics.
type Stats struct {
	Relays int   // relay sessions held
	Agents int   // agent sessions on them
	Pushes int64 // desired-bundle assignments sent to relays
}

// Stats returns the current counters.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return Stats{Relays: len(f.relays), Agents: len(f.agents), Pushes: f.pushes}
}

// Revoke cuts the live sessions of agents on every relay of this hub and
// makes those relays refuse them.
func (f *Fleet) Revoke(ids []string, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.known, id)
	}
	for _, rs := range f.relays {
		rs.queueRevokeLocked(ids, reason)
	}
}

// Run reconciles desired bundles and writes status until ctx ends, then
// closes every relay session and flushes what is pending.
func (f *Fleet) Run(ctx context.Context) error {
	f.wg.Go(func() { f.runWriter(ctx) })
	poll := time.NewTicker(f.cfg.PollInterval)
	defer poll.Stop()
	var due <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			f.mu.Lock()
			f.stopping = true
			sessions := make([]*relaySession, 0, len(f.relays))
			for _, rs := range f.relays {
				sessions = append(sessions, rs)
			}
			f.mu.Unlock()
			for _, rs := range sessions {
				rs.conn.CloseNow()
			}
			f.wg.Wait()
			return nil
		case <-f.kick:
		case <-due:
		case <-poll.C:
			f.poll(ctx)
		}
		next := f.reconcile(ctx)
		due = nil
		if next > 0 {
			due = time.After(next)
		}
	}
}

// revokeOverlap is how far back each revocation poll reaches before the
// previous one, for clock skew between hubs; revoking twice is harmless.
const revokeOverlap = 5 * time.Second

// poll notices revisions committed and agents revoked by other hubs.
func (f *Fleet) poll(ctx context.Context) {
	f.pollRevocations(ctx)
	heads, err := f.db.WorkspaceRevisions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("fleet: polling workspace revisions", "err", err)
		}
		return
	}
	f.mu.Lock()
	var changed []string
	for ws, rev := range heads {
		if cur, ok := f.heads[ws]; ok && cur != rev {
			changed = append(changed, ws)
		}
	}
	f.mu.Unlock()
	for _, ws := range changed {
		f.Notify(ws)
	}
}

// reconcile computes desired bundles for fresh agents and for the agents of
// workspaces whose debounce has run out, and queues the changes to relays.
// It returns how long until the next debounce ends, 0 when none waits.
func (f *Fleet) reconcile(ctx context.Context) time.Duration {
	now := f.cfg.Now()
	f.mu.Lock()
	var wait time.Duration
	due := map[string]bool{}
	for ws, n := range f.notified {
		left := min(n.last.Add(f.cfg.Debounce).Sub(now), n.first.Add(f.cfg.MaxDelay).Sub(now))
		if n.now || left <= 0 {
			due[ws] = true
			delete(f.notified, ws)
			f.pushed[ws] = now
		} else if wait == 0 || left < wait {
			wait = left
		}
	}
	fresh := f.fresh
	f.fresh = map[string]bool{}
	// Agents whose enrollment facts are not cached yet, by workspace.
	missing := map[string][]string{}
	for id := range fresh {
		a := f.agents[id]
		if a == nil {
			delete(fresh, id)
			continue
		}
		if _, ok := f.known[id]; !ok {
			missing[a.ws] = append(missing[a.ws], id)
		}
	}
	f.mu.Unlock()

	if len(fresh) == 0 && len(due) == 0 {
		return wait
	}
	f.learnAgents(ctx, missing)

	// The workspaces to compute: those due, and those of fresh agents.
	f.mu.Lock()
	wsAgents := map[string][]string{}
	for id, a := range f.agents {
		if due[a.ws] || fresh[id] {
			wsAgents[a.ws] = append(wsAgents[a.ws], id)
		}
	}
	f.mu.Unlock()
	for ws, ids := range wsAgents {
		f.assign(ctx, ws, ids)
	}
	return wait
}

// learnAgents loads the enrollment facts of agents not cached yet. An
// agent the store does not know (deleted, or from a wiped installation) is
// revoked on every relay of ours.
func (f *Fleet) learnAgents(ctx context.Context, missing map[string][]string) {
	for ws, ids := range missing {
		found, err := f.db.AgentFactsByID(ctx, ids)
		if err != nil {
			f.log.Error("fleet: loading agents", "workspace", ws, "agents", len(ids), "err", err)
			continue
		}
		var unknown []string
		f.mu.Lock()
		for _, id := range ids {
			a, ok := found[id]
			if !ok || a.Workspace != ws {
				unknown = append(unknown, id)
				continue
			}
			f.known[id] = agentInfo{ws: ws, labels: a.Labels}
		}
		f.mu.Unlock()
		if len(unknown) > 0 {
			f.log.Warn("fleet: refusing agents the store does not know (deleted?)", "workspace", ws, "agents", len(unknown))
			f.Revoke(unknown, "agent is not enrolled")
		}
	}
}

// assignChunk is how many agents assign hands to the relays at a time.
// Assigning 50,000 agents takes the hub about a tenth of a second; in
// chunks, relays fan out the first agents' bundles meanwhile rather than
// wait for the last. A variable for tests.
var assignChunk = 2000

// assign computes the desired bundle of agents ids of workspace ws at its
// newest revision and queues every change to the agents' relays.
func (f *Fleet) assign(ctx context.Context, ws string, ids []string) {
	w, err := f.db.GetWorkspace(ctx, ws)
	if err != nil {
		f.log.Error("fleet: reading workspace", "workspace", ws, "err", err)
		return
	}
	set, err := f.revs.get(ctx, ws, w.Revision)
	if err != nil {
		f.log.Error("fleet: loading revision", "workspace", ws, "revision", w.Revision, "err", err)
		return
	}
	f.mu.Lock()
	f.heads[ws] = w.Revision
	jobs := make([]assignJob, 0, len(ids))
	for _, id := range ids {
		if info, ok := f.known[id]; ok {
			jobs = append(jobs, assignJob{id: id, labels: info.labels})
		}
	}
	f.mu.Unlock()
	for chunk := range slices.Chunk(jobs, assignChunk) {
		f.assignJobs(set, chunk)
	}
}

// assignJob is one agent to assign: its id and labels, then its bundle.
type assignJob struct {
	id     string
	labels map[string]string
	b      *bundle
}

// assignJobs is assign for some of the agents.
func (f *Fleet) assignJobs(set *revisionSet, jobs []assignJob) {
	// Compile outside the fleet lock: equal selections share one compile.
	want := jobs[:0]
	for _, j := range jobs {
		b, err := set.bundleFor(j.labels)
		if err != nil {
			f.log.Error("fleet: no bundle for agent", "agent", j.id, "err", err)
			continue
		}
		j.b = b
		want = append(want, j)
	}
	// Agents on relays that take deltas get one from the bundle they run,
	// computed once per pair outside the fleet lock. Most agents of a
	// push share one pair: the last is not looked up again.
	f.mu.Lock()
	pairs := map[deltaKey]*bundle{}
	var last deltaKey
	for _, j := range want {
		if a := f.agents[j.id]; a != nil && a.desired != j.b.hash && a.applied != "" && a.applied != j.b.hash && a.relay.deltas {
			if k := (deltaKey{a.applied, j.b.hash}); k != last {
				pairs[k], last = j.b, k
			}
		}
	}
	f.mu.Unlock()
	ds := make(map[deltaKey]*delta, len(pairs))
	for k, b := range pairs {
		ds[k] = f.deltas.get(k.base, b)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var lastD *delta
	last = deltaKey{}
	for _, j := range want {
		a := f.agents[j.id]
		if a == nil || a.desired == j.b.hash {
			continue
		}
		a.desired = j.b.hash
		var d *delta
		if a.relay.deltas {
			if k := (deltaKey{a.applied, j.b.hash}); k == last {
				d = lastD
			} else {
				d, lastD, last = ds[k], ds[k], k
			}
		}
		a.relay.queueDesiredLocked(j.id, j.b, d)
		f.pushes++
	}
}

// pollRevocations cuts the sessions of connected agents whose certificates
// were revoked since the last poll, by this hub or any other.
func (f *Fleet) pollRevocations(ctx context.Context) {
	now := f.cfg.Now()
	since := f.revokedChecked
	if since.IsZero() {
		since = now.Add(-f.cfg.PollInterval)
	}
	ids, err := f.db.RevokedIdentitiesSince(ctx, since.Add(-revokeOverlap))
	if err != nil {
		if ctx.Err() == nil {
			f.log.Warn("fleet: polling revocations", "err", err)
		}
		return
	}
	f.revokedChecked = now
	var cut []string
	f.mu.Lock()
	for _, s := range ids {
		id, err := pki.ParseIdentity(s)
		if err == nil && id.Role == pki.RoleAgent && f.agents[id.ID] != nil {
			cut = append(cut, id.ID)
		}
	}
	f.mu.Unlock()
	if len(cut) > 0 {
		f.log.Info("fleet: cutting sessions of revoked agents", "agents", len(cut))
		f.Revoke(cut, wire.ReasonRevoked)
	}
}
