package bench

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"syscall"
	"time"
)

// An agent process runs a share of a run's simulated agents (a fleet) and
// talks with the bench over a pair of streams, one JSON value per line:
//
//	bench -> agent process: a workerConfig, then workerCmds
//	agent process -> bench: a "ready" workerEvent, then "status" events
//	  (every statusInterval, when something changed) and one "reply" per
//	  command, or a "failed" event before it gives up
//
// The bench runs its only agent process inside itself, over io.Pipes, when
// the agents fit its open files limit, and `nxmesh bench-agents` child
// processes (RunAgents) otherwise; the scenarios see the same protocol
// either way (swarm). Figures are measured where the agents are: times of
// connects and acks are taken in the agent process, as wall-clock Unix
// nanoseconds (every process reads the same clock), so how late the bench
// hears of them does not change them.
//
// An agent process stops its agents and ends when its input ends: when
// the bench closes it, or dies.

// statusInterval is how often an agent process tells its counts.
const statusInterval = 20 * time.Millisecond

// workerConfig is the first line an agent process reads: which agents it
// runs and where they connect.
type workerConfig struct {
	// Identities is the agents' key and certificate cache (agents.pem);
	// the process runs its entries First to First+Count-1, which are
	// agents First... of the run.
	Identities string `json:"identities"`
	First      int    `json:"first"`
	Count      int    `json:"count"`
	// RelayURLs are every relay's agent endpoint: agent i of the run
	// dials RelayURLs[relayOf(i)].
	RelayURLs []string `json:"relayURLs"`
	// RootPEM is the hub's root certificate, which relays chain to.
	RootPEM     string `json:"rootPEM"`
	SourceAddrs int    `json:"sourceAddrs"`
	Version     string `json:"version"`
}

// Commands of the bench to an agent process.
const (
	// opStart starts every agent, Rate per second (0: all at once).
	opStart = "start"
	// opResumption makes agents offer their TLS session tickets (On) or
	// not.
	opResumption = "resumption"
	// opMark begins a watch (see watch): Mark numbers it, Since is when
	// it counts from, Relays are the relays whose agents count as back.
	opMark = "mark"
	// opStates asks for every agent's state, with its results reported
	// at or after Since.
	opStates = "states"
	// opCollect collects the process's garbage now (runtime.GC), between
	// measured phases rather than in one: with GOGC 400 and a heap of
	// gigabytes, a collection in a push took 1.4 s of CPU on a 2-core
	// machine.
	opCollect = "collect"
)

// workerCmd is one command; the reply carries its Seq.
type workerCmd struct {
	Op     string `json:"op"`
	Seq    int64  `json:"seq"`
	Rate   int    `json:"rate,omitempty"`
	On     bool   `json:"on,omitempty"`
	Mark   int64  `json:"mark,omitempty"`
	Since  int64  `json:"since,omitempty"` // Unix nanoseconds
	Relays []int  `json:"relays,omitempty"`
}

// Kinds of workerEvent.
const (
	evReady  = "ready"
	evStatus = "status"
	evReply  = "reply"
	evFailed = "failed"
)

// workerEvent is one line from an agent process.
type workerEvent struct {
	Kind string `json:"kind"`
	Seq  int64  `json:"seq,omitempty"` // reply: the command's
	// IDs (ready) are the agents' IDs, in order: the bench checks they
	// are the agents it meant.
	IDs []string `json:"ids,omitempty"`
	// Status comes with status events and every reply.
	Status *workerStatus `json:"status,omitempty"`
	// States (reply to opStates) has one entry per agent, in order.
	States []agentState `json:"states,omitempty"`
	Err    string       `json:"err,omitempty"` // failed
}

// workerStatus is an agent process's counts.
type workerStatus struct {
	Connected  int64 `json:"connected"`  // agents with a session now
	Heartbeats int64 `json:"heartbeats"` // heartbeats sent, ever
	Handshakes int64 `json:"handshakes"` // TLS handshakes completed, ever
	Resumed    int64 `json:"resumed"`    // ... of which resumed a session
	Deltas     int64 `json:"deltas"`     // bundles built from a delta, ever
	WholeAsked int64 `json:"wholeAsked"` // deltas that did not apply, ever
	// Mark is the watch that Reported and Back count for (0: none yet).
	Mark     int64 `json:"mark"`
	Reported int   `json:"reported"`
	Back     int   `json:"back"`
}

// agentState is one agent as opStates tells it.
type agentState struct {
	Up       bool `json:"u,omitempty"` // has a session now
	Connects int  `json:"n,omitempty"` // sessions, ever
	// Reconnects are the sessions since the last mark.
	Reconnects int      `json:"r,omitempty"`
	ConnectAt  int64    `json:"c,omitempty"` // when the last session began, Unix ns
	Live       string   `json:"l,omitempty"` // hash of the last applied bundle
	Reports    []report `json:"p,omitempty"` // results since the request's Since, oldest first
}

// ackSince is when the agent first reported hash applied at or after
// since (Unix nanoseconds).
func (st agentState) ackSince(hash string, since int64) (time.Time, bool) {
	for _, r := range st.Reports {
		if r.Applied && r.Hash == hash && r.At >= since {
			return time.Unix(0, r.At), true
		}
	}
	return time.Time{}, false
}

// watch is what a mark asks an agent process to follow, so that the bench
// can wait for a push or a storm without asking about every agent:
// Reported counts agents that reported a result for a hash other than the
// one they ran at the mark, since Since; Back counts agents of the marked
// relays that have a session newer than the mark. Both are counted with a
// cursor over the agents, as far as the first one not there yet, so an
// idle process does no work; opStates tells the truth of each agent.
type watch struct {
	mark     int64
	since    int64
	prev     []string // each agent's live hash at the mark
	connects []int    // each agent's sessions at the mark
	watched  []int    // the agents (indices) of the marked relays
	reported int      // agents[:reported] have reported
	back     int      // watched[:back] are back
}

// agentServer is the agent process's side of the protocol.
type agentServer struct {
	fl *fleet

	mu   sync.Mutex // guards enc and w; held while a status is taken and sent, so that events leave in the order they were taken
	enc  *json.Encoder
	w    watch
	last workerStatus // the last status sent, by the status loop only
}

// RunAgents is `nxmesh bench-agents`: an agent process that the bench
// starts when its agents do not fit one process's open files limit. It
// reads its share of the agents and the bench's commands from in and
// reports on out until in ends (the bench closed it, or died) or ctx
// does, then stops its agents.
func RunAgents(ctx context.Context, in io.Reader, out io.Writer) error {
	// As in the bench: the agents' heap is cheaper than collecting it.
	defer debug.SetGCPercent(debug.SetGCPercent(gcPercent))
	return serveAgents(ctx, pollable(in), out)
}

// pollable is in, made to return from a blocked Read when closed: a pipe
// inherited as standard input is in blocking mode, which Close does not
// interrupt.
func pollable(in io.Reader) io.ReadCloser {
	f, ok := in.(*os.File)
	if !ok {
		return io.NopCloser(in)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return f
	}
	var fd uintptr
	var nbErr error
	if err := rc.Control(func(d uintptr) { fd, nbErr = d, syscall.SetNonblock(int(d), true) }); err != nil || nbErr != nil {
		return f
	}
	// A file made from a non-blocking descriptor uses the runtime's poller.
	return os.NewFile(fd, f.Name())
}

// serveAgents runs an agent process on in and out. It returns once its
// agents have stopped.
func serveAgents(ctx context.Context, in io.ReadCloser, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Cancelling ends a blocked read.
	stop := context.AfterFunc(ctx, func() { in.Close() })
	defer stop()
	a := &agentServer{enc: json.NewEncoder(out)}
	err := a.serve(ctx, cancel, in)
	if err != nil {
		a.mu.Lock()
		_ = a.enc.Encode(workerEvent{Kind: evFailed, Err: err.Error()}) // the bench may be gone
		a.mu.Unlock()
	}
	return err
}

func (a *agentServer) serve(ctx context.Context, cancel context.CancelFunc, in io.Reader) error {
	dec := json.NewDecoder(in)
	var cfg workerConfig
	if err := dec.Decode(&cfg); err != nil {
		return fmt.Errorf("agent process: read its configuration: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(cfg.RootPEM)) {
		return errors.New("agent process: no root certificate in its configuration")
	}
	var ids []identity
	if cfg.Count > 0 {
		var err error
		if ids, err = loadIdentityRange(cfg.Identities, roots, cfg.First, cfg.Count); err != nil {
			return fmt.Errorf("agent process: %w", err)
		}
	}
	if len(ids) != cfg.Count {
		return fmt.Errorf("agent process: %d identities for %d agents", len(ids), cfg.Count)
	}
	fl, err := newFleet(ids, cfg.First, cfg.RelayURLs, roots, cfg.SourceAddrs, cfg.Version)
	if err != nil {
		return fmt.Errorf("agent process: %w", err)
	}
	a.fl = fl
	defer fl.stop()
	ready := workerEvent{Kind: evReady, IDs: make([]string, len(ids))}
	for i, id := range ids {
		ready.IDs[i] = id.id
	}
	if err := a.send(ready); err != nil {
		return err
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	sctx, stopStatus := context.WithCancel(ctx)
	defer stopStatus()
	wg.Go(func() {
		if err := a.statusLoop(sctx); err != nil {
			cancel() // the bench no longer listens
		}
	})
	for {
		var c workerCmd
		if err := dec.Decode(&c); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil // the bench closed the input, or is gone
			}
			return fmt.Errorf("agent process: read a command: %w", err)
		}
		if err := a.handle(ctx, c); err != nil {
			return err
		}
	}
}

// handle runs one command and replies.
func (a *agentServer) handle(ctx context.Context, c workerCmd) error {
	reply := workerEvent{Kind: evReply, Seq: c.Seq}
	switch c.Op {
	case opStart:
		a.fl.start(ctx, c.Rate)
	case opResumption:
		a.fl.resumption.Store(c.On)
	case opMark:
		w := a.newWatch(c)
		a.mu.Lock()
		a.w = w
		a.mu.Unlock()
	case opCollect:
		runtime.GC()
	case opStates:
		a.mu.Lock()
		reply.States = make([]agentState, len(a.fl.agents))
		for k, s := range a.fl.agents {
			st := s.state(c.Since)
			if a.w.connects != nil {
				st.Reconnects = st.Connects - a.w.connects[k]
			}
			reply.States[k] = st
		}
		a.mu.Unlock()
	default:
		return fmt.Errorf("agent process: unknown command %q", c.Op)
	}
	return a.send(reply)
}

// newWatch takes every agent's hash and session count for a mark.
func (a *agentServer) newWatch(c workerCmd) watch {
	agents := a.fl.agents
	w := watch{mark: c.Mark, since: c.Since, prev: make([]string, len(agents)), connects: make([]int, len(agents))}
	marked := map[int]bool{}
	for _, r := range c.Relays {
		marked[r] = true
	}
	for k, s := range agents {
		w.prev[k], _ = s.Live()
		_, w.connects[k] = s.session()
		if marked[s.relay] {
			w.watched = append(w.watched, k)
		}
	}
	return w
}

// send writes ev with the status as it is now.
func (a *agentServer) send(ev workerEvent) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.statusLocked()
	ev.Status = &st
	if err := a.enc.Encode(ev); err != nil {
		return fmt.Errorf("agent process: write to the bench: %w", err)
	}
	return nil
}

// statusLoop sends the status every statusInterval when it changed, until
// ctx ends or the bench cannot be written to.
func (a *agentServer) statusLoop(ctx context.Context) error {
	t := time.NewTicker(statusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		a.mu.Lock()
		st := a.statusLocked()
		var err error
		if st != a.last {
			a.last = st
			err = a.enc.Encode(workerEvent{Kind: evStatus, Status: &st})
		}
		a.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// statusLocked moves the watch's cursors as far as they go and reads the
// counts; a.mu is held. The cursors move first: an agent is back only
// after its handshake was counted.
func (a *agentServer) statusLocked() workerStatus {
	w := &a.w
	agents := a.fl.agents
	for w.prev != nil && w.reported < len(agents) && agents[w.reported].reportedSince(w.prev[w.reported], w.since) {
		w.reported++
	}
	for w.back < len(w.watched) {
		k := w.watched[w.back]
		up, n := agents[k].session()
		if !up || n <= w.connects[k] {
			break
		}
		w.back++
	}
	f := a.fl
	return workerStatus{
		Connected:  f.connected.Load(),
		Heartbeats: f.heartbeats.Load(),
		Handshakes: f.handshakes.Load(),
		Resumed:    f.resumed.Load(),
		Deltas:     f.deltas.Load(),
		WholeAsked: f.wholeAsked.Load(),
		Mark:       w.mark,
		Reported:   w.reported,
		Back:       w.back,
	}
}
