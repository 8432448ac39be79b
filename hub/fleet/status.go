package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/wire"
)

// statusBatch is the most agent rows one status transaction writes.
const statusBatch = 1000

// runWriter writes agent status and relay records: at most once per
// FlushInterval, only when something changed, in batches. Relay records are
// refreshed every RelayRefresh, which is what keeps their agents online.
func (f *Fleet) runWriter(ctx context.Context) {
	background(f.log)
	refresh := time.NewTicker(f.cfg.RelayRefresh)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			f.flush(fctx)
			cancel()
			return
		case <-f.flushKick:
		case <-refresh.C:
			f.mu.Lock()
			for _, rs := range f.relays {
				f.relayWrites[rs.id] = f.relayRecordLocked(rs)
			}
			f.mu.Unlock()
		}
		f.flush(ctx)
		select { // coalesce: the next flush waits at least FlushInterval
		case <-ctx.Done():
		case <-time.After(f.cfg.FlushInterval):
		}
	}
}

func (f *Fleet) relayRecordLocked(rs *relaySession) store.Relay {
	return store.Relay{ID: rs.id, Hub: f.cfg.HubID, Agents: len(rs.agents), ConnectedAt: rs.connectedAt, LastSeen: f.cfg.Now()}
}

// flush writes what is pending. On failure the writes go back to the queue
// (newer news for the same agent wins) and are tried on the next flush.
func (f *Fleet) flush(ctx context.Context) {
	f.mu.Lock()
	status, gone, relays, relayGone := f.status, f.gone, f.relayWrites, f.relayGone
	// The status map is sized as the last: a push's next flush is as
	// large, and a map grown from empty rehashed its way there (3 % of the
	// hub's CPU in a 50,000-agent push).
	f.status, f.gone, f.relayWrites, f.relayGone = make(map[string]store.AgentStatus, len(status)), map[string]map[string]bool{}, map[string]store.Relay{}, nil
	f.mu.Unlock()

	for _, r := range relays {
		if err := f.db.PutRelay(ctx, r); err != nil {
			f.log.Warn("fleet: writing relay record", "relay", r.ID, "err", err)
			f.mu.Lock()
			if _, ok := f.relayWrites[r.ID]; !ok && f.relays[r.ID] != nil {
				f.relayWrites[r.ID] = r
			}
			f.mu.Unlock()
		}
	}
	// In key order: the database then walks its id index and rows nearly
	// in order (BenchmarkUpdateAgentStatus in store: 36 to 23 us an agent
	// on SQLite, 40 to 32 on PostgreSQL, against the order results came
	// in), and hubs sharing a database take row locks in one order.
	sts := slices.SortedFunc(maps.Values(status), func(a, b store.AgentStatus) int { return strings.Compare(a.ID, b.ID) })
	for chunk := range slices.Chunk(sts, statusBatch) {
		if err := f.db.UpdateAgentStatus(ctx, chunk); err != nil {
			f.log.Warn("fleet: writing agent status", "agents", len(chunk), "err", err)
			f.mu.Lock()
			for _, st := range chunk {
				if _, newer := f.status[st.ID]; !newer {
					f.status[st.ID] = st
				}
			}
			f.mu.Unlock()
		}
	}
	// Disconnects go after status, so an agent that moved between relays
	// within one flush ends up on its new relay.
	for relay, set := range gone {
		ids := slices.Collect(maps.Keys(set))
		if err := f.db.DisconnectAgents(ctx, relay, ids, f.cfg.Now()); err != nil {
			f.log.Warn("fleet: writing disconnects", "relay", relay, "err", err)
			f.mu.Lock()
			for _, id := range ids {
				if a := f.agents[id]; a == nil || a.relay.id != relay {
					if f.gone[relay] == nil {
						f.gone[relay] = map[string]bool{}
					}
					f.gone[relay][id] = true
				}
			}
			f.mu.Unlock()
		}
	}
	for _, id := range relayGone {
		if err := f.db.DeleteRelay(ctx, id, f.cfg.HubID); err != nil {
			f.log.Warn("fleet: deleting relay record", "relay", id, "err", err)
		}
	}
}

// Agent states of convergence.
const (
	StateApplied    = "applied"
	StateRejected   = "rejected"
	StateRolledBack = "rolledBack"
	StateFailed     = "failed"
	StatePending    = "pending"
	StateOffline    = "offline"
)

// AgentView is an agent as the API shows it: its record, whether it is
// online, and how it stands against one revision.
type AgentView struct {
	store.Agent
	Online bool
	// DesiredHash is the bundle compiled for the agent from the revision;
	// empty when it could not be compiled (Reason says why).
	DesiredHash string
	// State is one of the State constants.
	State string
	// Reason explains a failed or rejected state.
	Reason string
}

// Counts are agents per state.
type Counts struct {
	Applied    int `json:"applied"`
	Rejected   int `json:"rejected"`
	RolledBack int `json:"rolledBack"`
	Failed     int `json:"failed"`
	Pending    int `json:"pending"`
	Offline    int `json:"offline"`
}

func (c *Counts) add(state string) {
	switch state {
	case StateApplied:
		c.Applied++
	case StateRejected:
		c.Rejected++
	case StateRolledBack:
		c.RolledBack++
	case StateFailed:
		c.Failed++
	case StateOffline:
		c.Offline++
	default:
		c.Pending++
	}
}

// Failing names an agent that did not apply a revision, and why.
type Failing struct {
	Agent  string `json:"agent"`
	Relay  string `json:"relay,omitempty"`
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
	Output string `json:"output,omitempty"`
	Hash   string `json:"hash,omitempty"`
}

// Convergence is how far one revision has reached a workspace's agents.
type Convergence struct {
	Workspace string            `json:"workspace"`
	Revision  int64             `json:"revision"`
	Head      int64             `json:"head"`
	Total     int               `json:"total"`
	Done      bool              `json:"done"`
	Counts    Counts            `json:"counts"`
	ByRelay   map[string]Counts `json:"byRelay"`
	ByLabel   map[string]Counts `json:"byLabel"`
	Failing   []Failing         `json:"failing"`
}

// liveRelays returns the relays whose record is fresh.
func (f *Fleet) liveRelays(ctx context.Context) (map[string]store.Relay, error) {
	list, err := f.db.ListRelays(ctx)
	if err != nil {
		return nil, err
	}
	cutoff := f.cfg.Now().Add(-3 * f.cfg.RelayRefresh)
	live := map[string]store.Relay{}
	for _, r := range list {
		if r.LastSeen.After(cutoff) {
			live[r.ID] = r
		}
	}
	return live, nil
}

// Relays returns the relays with a live session to some hub, by id.
func (f *Fleet) Relays(ctx context.Context) ([]store.Relay, error) {
	live, err := f.liveRelays(ctx)
	if err != nil {
		return nil, err
	}
	out := slices.Collect(maps.Values(live))
	slices.SortFunc(out, func(a, b store.Relay) int {
		if a.ID < b.ID {
			return -1
		}
		return 1
	})
	return out, nil
}

// viewContext is what classifying agents of ws against revision rev (the
// newest when negative) needs: the revision's bundles, the live relays,
// and the workspace's newest revision.
func (f *Fleet) viewContext(ctx context.Context, ws string, rev int64) (*revisionSet, map[string]store.Relay, int64, error) {
	w, err := f.db.GetWorkspace(ctx, ws)
	if err != nil {
		return nil, nil, 0, err
	}
	if rev < 0 {
		rev = w.Revision
	}
	if rev > w.Revision {
		return nil, nil, w.Revision, fmt.Errorf("workspace %q has no revision %d (newest is %d): %w", ws, rev, w.Revision, store.ErrNotFound)
	}
	set, err := f.revs.get(ctx, ws, rev)
	if err != nil {
		return nil, nil, w.Revision, err
	}
	live, err := f.liveRelays(ctx)
	if err != nil {
		return nil, nil, w.Revision, err
	}
	return set, live, w.Revision, nil
}

// view classifies one agent.
func view(a store.Agent, set *revisionSet, live map[string]store.Relay) AgentView {
	v := AgentView{Agent: a}
	_, v.Online = live[a.Relay]
	v.Online = v.Online && a.Relay != ""
	b, err := set.bundleFor(a.Labels)
	if err == nil {
		v.DesiredHash = b.hash
	}
	v.State, v.Reason = classify(&v, err)
	return v
}

// agentsPageChunk is how many agents AgentsPage reads per query (a test
// makes it small).
var agentsPageChunk = 1000

// AgentsPage returns, in id order, the first limit agents of ws after the
// id after (all when empty) that keep accepts, classified against the
// newest revision; more reports that a further agent would be accepted.
// It reads the agents from the cursor on, a chunk at a time, and stops
// when the page is full: a client paging through 50,000 agents a thousand
// at a time made the hub classify all 50,000 for every page, minutes of
// CPU in all.
func (f *Fleet) AgentsPage(ctx context.Context, ws, after string, limit int, keep func(AgentView) bool) (page []AgentView, more bool, err error) {
	set, live, _, err := f.viewContext(ctx, ws, -1)
	if err != nil {
		return nil, false, err
	}
	for {
		agents, err := f.db.ListAgentsAfter(ctx, ws, after, agentsPageChunk)
		if err != nil {
			return nil, false, err
		}
		for _, a := range agents {
			after = a.ID
			v := view(a, set, live)
			if !keep(v) {
				continue
			}
			if len(page) == limit {
				return page, true, nil
			}
			page = append(page, v)
		}
		if len(agents) < agentsPageChunk {
			return page, false, nil
		}
	}
}

// ErrNoAgent is Agent's error for an agent the workspace does not have.
var ErrNoAgent = errors.New("no such agent")

// Agent returns one agent of ws, classified against the newest revision.
func (f *Fleet) Agent(ctx context.Context, ws, id string) (AgentView, error) {
	set, live, _, err := f.viewContext(ctx, ws, -1)
	if err != nil {
		return AgentView{}, err
	}
	a, err := f.db.GetAgent(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && a.Workspace != ws {
		return AgentView{}, fmt.Errorf("agent %q in workspace %q: %w", id, ws, ErrNoAgent)
	}
	if err != nil {
		return AgentView{}, err
	}
	return view(a, set, live), nil
}

// classify decides an agent's state against its desired bundle.
func classify(v *AgentView, compileErr error) (state, reason string) {
	switch {
	case compileErr != nil:
		return StateFailed, compileErr.Error()
	case !v.Online:
		return StateOffline, ""
	case v.AppliedHash == v.DesiredHash:
		return StateApplied, ""
	case v.ResultHash == v.DesiredHash && v.LastResult == wire.ResultApplied:
		// The agent's own report of the apply; a heartbeat it sent just
		// before may have landed after it.
		return StateApplied, ""
	case v.ResultHash != v.DesiredHash:
		return StatePending, ""
	}
	switch v.LastResult {
	case wire.ResultRejected:
		return StateRejected, v.LastError
	case wire.ResultRolledBack:
		return StateRolledBack, v.LastError
	case wire.ResultFailed:
		return StateFailed, v.LastError
	}
	return StatePending, ""
}

// Convergence summarizes how revision rev of ws has reached its agents.
func (f *Fleet) Convergence(ctx context.Context, ws string, rev int64) (Convergence, error) {
	set, live, head, err := f.viewContext(ctx, ws, rev)
	if err != nil {
		return Convergence{}, err
	}
	// Convergence needs no timestamps: the lighter listing.
	agents, err := f.db.ListAgentStates(ctx, ws)
	if err != nil {
		return Convergence{}, err
	}
	c := Convergence{Workspace: ws, Revision: rev, Head: head, Total: len(agents),
		ByRelay: map[string]Counts{}, ByLabel: map[string]Counts{}, Failing: []Failing{}}
	for _, a := range agents {
		v := view(a, set, live)
		c.Counts.add(v.State)
		if v.Relay != "" {
			rc := c.ByRelay[v.Relay]
			rc.add(v.State)
			c.ByRelay[v.Relay] = rc
		}
		for k, val := range v.Labels {
			lc := c.ByLabel[k+"="+val]
			lc.add(v.State)
			c.ByLabel[k+"="+val] = lc
		}
		switch v.State {
		case StateRejected, StateRolledBack, StateFailed:
			out := ""
			if v.ResultHash == v.DesiredHash {
				out = v.ResultOutput
			}
			c.Failing = append(c.Failing, Failing{Agent: v.ID, Relay: v.Relay, State: v.State, Reason: v.Reason, Output: out, Hash: v.DesiredHash})
		}
	}
	c.Done = c.Counts.Pending == 0
	return c, nil
}

// writerNice is the scheduling priority of the thread that writes status.
const writerNice = 10

// background moves the calling goroutine to a thread of its own at nice
// writerNice, for the rest of its life: Go ends the thread with it, or
// parks it for good if it was the process's main thread. Status
// writes are the hub's bulk work during a push, and they come after the
// acks they record: on a machine the hub shares with relays or agents,
// the kernel then gives the fan-out the CPU first, and the writer what is
// left; on its own machine the writer runs as fast as before. A thread
// that cannot be reniced (a sandbox's seccomp policy) writes at its
// normal priority.
func background(log *slog.Logger) {
	runtime.LockOSThread()
	if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), writerNice); err != nil {
		log.Debug("fleet: status writer keeps its priority", "err", err)
	}
}
