package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Open files a process needs beside one per agent connection.
const (
	// agentProcReserve is an agent process's: the Go runtime, its log,
	// the bench's API connections, redials in flight.
	agentProcReserve = 1024
	// relayReserve is a relay's: its hub session, listener, state and
	// log files.
	relayReserve = 512
)

// agentProcStopWait bounds how long an agent process may take to stop its
// agents once its input is closed.
const agentProcStopWait = 30 * time.Second

// planAgentProcs is how many agent processes run agents spread over relays
// when every process may open limit files: asked, when not 0, else as few
// as the limit allows (at least one). It refuses
// a run that a relay or the asked agent processes cannot hold, naming the
// flag to change.
func planAgentProcs(agents, relays, asked int, limit uint64) (int, error) {
	lim := int(min(limit, 1<<30))
	perRelay := lim - relayReserve
	perProc := lim - agentProcReserve
	if perRelay <= 0 || perProc <= 0 {
		return 0, fmt.Errorf("bench: the open files limit of %d leaves no room for agents", limit)
	}
	if n := ceilDiv(agents, relays); n > perRelay {
		return 0, fmt.Errorf("bench: %s agents over %d relays is %s per relay, and under the open files limit of %s a relay holds at most %s: run with --relays %d or more",
			groupInt(agents), relays, groupInt(n), groupInt(lim), groupInt(perRelay), ceilDiv(agents, perRelay))
	}
	if asked > 0 {
		if n := ceilDiv(agents, asked); n > perProc {
			return 0, fmt.Errorf("bench: %s agents in %d agent processes is %s per process, and under the open files limit of %s an agent process holds at most %s: run with --agent-procs %d or more (0 lets the bench choose)",
				groupInt(agents), asked, groupInt(n), groupInt(lim), groupInt(perProc), ceilDiv(agents, perProc))
		}
		return asked, nil
	}
	return ceilDiv(agents, perProc), nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// swarm is the simulated agents of a run as the scenarios see them: spread
// over agent processes (worker.go), each a fleet of a contiguous share of
// the agents. With one agent process it runs inside the bench; with more,
// each is an `nxmesh bench-agents` child process. Agent i of the run is
// agent i-first of the worker whose share holds it.
type swarm struct {
	workers []*worker
	ids     []string      // every agent's ID, by index in the run
	timeout time.Duration // bounds every command
	marks   int64         // number of the last mark
	wg      sync.WaitGroup
}

// worker is the bench's side of one agent process.
type worker struct {
	name         string
	first, count int
	proc         *proc // nil: runs in the bench's process
	in           io.WriteCloser
	ready        chan workerEvent // the ready event, once
	ended        chan struct{}    // closed once the agent process's output has ended

	sendMu sync.Mutex // serializes writes to in
	enc    *json.Encoder

	mu      sync.Mutex // guards the fields below
	status  workerStatus
	seq     int64
	replies map[int64]chan workerEvent
	err     error // why the agent process failed or ended
}

// startSwarm starts procs agent processes for ids (agent i of the run is
// ids[i]) and waits until each has loaded its share. ids are the first
// entries of the identities cache in the work directory, in order, which
// agent processes other than the bench read.
func startSwarm(ctx context.Context, cfg *Config, procs int, ids []identity, relayURLs []string, rootPEM []byte) (*swarm, error) {
	s := &swarm{ids: make([]string, len(ids)), timeout: cfg.Timeout}
	for i, id := range ids {
		s.ids[i] = id.id
	}
	first := 0
	for k := range procs {
		wc := workerConfig{
			Identities:  identitiesFile(cfg.WorkDir),
			First:       first,
			Count:       len(ids)/procs + btoi(k < len(ids)%procs),
			RelayURLs:   relayURLs,
			RootPEM:     string(rootPEM),
			SourceAddrs: cfg.SourceAddrs,
			Version:     cfg.Version,
		}
		first += wc.Count
		w, err := s.runChild(cfg, k+1, wc)
		if err != nil {
			s.stop()
			return nil, err
		}
		s.workers = append(s.workers, w)
	}
	// The agent processes load their identities at the same time.
	for _, w := range s.workers {
		if err := s.waitReady(ctx, w); err != nil {
			s.stop()
			return nil, err
		}
	}
	return s, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// runChild starts `nxmesh bench-agents` number n.
func (s *swarm) runChild(cfg *Config, n int, wc workerConfig) (*worker, error) {
	name := fmt.Sprintf("agents-%d", n)
	p := &proc{name: name, bin: cfg.Binary, args: []string{"bench-agents"}, pipes: true,
		logPath: filepath.Join(cfg.WorkDir, "logs", name+".log"),
		// A simulated agent's goroutine grows its stack the first time it
		// applies a bundle; Go shrinks the stacks of parked goroutines at
		// every collection, and every agent then grew it again in the next
		// push, all at once (the first push after connecting took 1.1-1.4 s
		// to its last ack at 10,000 agents, the others 0.7-0.9 s). A real
		// agent, one per machine, pays that alone.
		env: []string{"GODEBUG=gcshrinkstackoff=1"}}
	if err := p.profiled(cfg); err != nil {
		return nil, err
	}
	if err := p.start(); err != nil {
		return nil, err
	}
	w := newWorker(name, wc, p.stdin, p)
	s.read(w, p.stdout)
	w.configure(wc)
	return w, nil
}

// newWorker is the bench's side of the agent process that reads in.
func newWorker(name string, wc workerConfig, in io.WriteCloser, p *proc) *worker {
	return &worker{
		name: name, first: wc.First, count: wc.Count, proc: p, in: in,
		ready: make(chan workerEvent, 1), ended: make(chan struct{}),
		enc: json.NewEncoder(in), replies: map[int64]chan workerEvent{},
	}
}

// configure sends the agent process its configuration; waitReady tells
// whether it took it.
func (w *worker) configure(wc workerConfig) {
	if err := w.send(wc); err != nil {
		w.fail(err)
	}
}

// read handles w's events until its output ends.
func (s *swarm) read(w *worker, out io.ReadCloser) {
	s.wg.Go(func() {
		defer close(w.ended)
		defer out.Close()
		dec := json.NewDecoder(out)
		for {
			var ev workerEvent
			if err := dec.Decode(&ev); err != nil {
				w.fail(w.endErr(err))
				return
			}
			w.mu.Lock()
			if ev.Status != nil {
				w.status = *ev.Status
			}
			switch ev.Kind {
			case evReady:
				w.ready <- ev
			case evReply:
				if ch, ok := w.replies[ev.Seq]; ok {
					ch <- ev
					delete(w.replies, ev.Seq)
				}
			case evFailed:
				if w.err == nil {
					w.err = fmt.Errorf("%s: %s", w.name, ev.Err)
				}
			}
			w.mu.Unlock()
		}
	})
}

// endErr says why w's output ended with err.
func (w *worker) endErr(err error) error {
	select {
	case <-w.proc.exited():
		return w.proc.exitErr()
	case <-time.After(5 * time.Second):
		return fmt.Errorf("%s closed its output (%v) but did not exit", w.name, err)
	}
}

// fail records why w failed, unless it already had.
func (w *worker) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

// failure is why w failed.
func (w *worker) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		return fmt.Errorf("%s: ended", w.name)
	}
	return w.err
}

// send writes v to w's input.
func (w *worker) send(v any) error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	if err := w.enc.Encode(v); err != nil {
		return fmt.Errorf("%s: write: %w", w.name, err)
	}
	return nil
}

// waitReady waits for w to have loaded its agents, and checks they are
// the ones the bench meant.
func (s *swarm) waitReady(ctx context.Context, w *worker) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	select {
	case ev := <-w.ready:
		if !slices.Equal(ev.IDs, s.ids[w.first:w.first+w.count]) {
			return fmt.Errorf("%s: loaded %d agents that are not agents %d to %d of the run", w.name, len(ev.IDs), w.first, w.first+w.count-1)
		}
		return nil
	case <-w.ended:
		return w.failure()
	case <-ctx.Done():
		return fmt.Errorf("%s: not ready within %s: %w", w.name, s.timeout, ctx.Err())
	}
}

// call sends c to w and waits for its reply.
func (s *swarm) call(ctx context.Context, w *worker, c workerCmd) (workerEvent, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ch := make(chan workerEvent, 1)
	w.mu.Lock()
	w.seq++
	c.Seq = w.seq
	w.replies[c.Seq] = ch
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		delete(w.replies, c.Seq)
		w.mu.Unlock()
	}()
	if err := w.send(c); err != nil {
		return workerEvent{}, err
	}
	select {
	case ev := <-ch:
		return ev, nil
	case <-w.ended:
		return workerEvent{}, w.failure()
	case <-ctx.Done():
		return workerEvent{}, fmt.Errorf("%s: no answer to %s: %w", w.name, c.Op, ctx.Err())
	}
}

// each sends c to every agent process (made per process by mk, when set)
// and waits for their replies.
func (s *swarm) each(ctx context.Context, c workerCmd, mk func(*worker) workerCmd) ([]workerEvent, error) {
	evs := make([]workerEvent, len(s.workers))
	var eg errgroup.Group
	for k, w := range s.workers {
		cmd := c
		if mk != nil {
			cmd = mk(w)
		}
		eg.Go(func() (err error) {
			evs[k], err = s.call(ctx, w, cmd)
			return err
		})
	}
	return evs, eg.Wait()
}

// start starts every agent, about rate per second over all agent
// processes (0: all at once).
func (s *swarm) start(ctx context.Context, rate int) error {
	_, err := s.each(ctx, workerCmd{Op: opStart}, func(w *worker) workerCmd {
		c := workerCmd{Op: opStart}
		if rate > 0 {
			c.Rate = max(rate*w.count/len(s.ids), 1)
		}
		return c
	})
	return err
}

// setResumption makes the agents offer their TLS session tickets, or not.
func (s *swarm) setResumption(ctx context.Context, on bool) error {
	_, err := s.each(ctx, workerCmd{Op: opResumption, On: on}, nil)
	return err
}

// collect has every agent process collect its garbage now.
func (s *swarm) collect(ctx context.Context) error {
	_, err := s.each(ctx, workerCmd{Op: opCollect}, nil)
	return err
}

// mark begins a watch (see watch) from since, with the agents of relays
// counting as back once they have a new session; watched reads it.
func (s *swarm) mark(ctx context.Context, since time.Time, relays []int) (int64, error) {
	s.marks++
	_, err := s.each(ctx, workerCmd{Op: opMark, Mark: s.marks, Since: since.UnixNano(), Relays: relays}, nil)
	return s.marks, err
}

// watched is what every agent process counted last for mark: agents that
// reported a new hash, and agents of the marked relays that are back. ok
// is false until every agent process has counted for this mark.
func (s *swarm) watched(mark int64) (reported, back int, ok bool) {
	for _, w := range s.workers {
		w.mu.Lock()
		st := w.status
		w.mu.Unlock()
		if st.Mark != mark {
			return 0, 0, false
		}
		reported += st.Reported
		back += st.Back
	}
	return reported, back, true
}

// counts is the agent processes' counts as they last told them, summed.
func (s *swarm) counts() workerStatus {
	var sum workerStatus
	if s == nil {
		return sum
	}
	for _, w := range s.workers {
		w.mu.Lock()
		st := w.status
		w.mu.Unlock()
		sum.Connected += st.Connected
		sum.Heartbeats += st.Heartbeats
		sum.Handshakes += st.Handshakes
		sum.Resumed += st.Resumed
		sum.Deltas += st.Deltas
		sum.WholeAsked += st.WholeAsked
	}
	return sum
}

// states is every agent's state, by index in the run, with the results it
// reported at or after since. The counts are fresh after it.
func (s *swarm) states(ctx context.Context, since time.Time) ([]agentState, error) {
	evs, err := s.each(ctx, workerCmd{Op: opStates, Since: since.UnixNano()}, nil)
	if err != nil {
		return nil, err
	}
	out := make([]agentState, 0, len(s.ids))
	for k, ev := range evs {
		w := s.workers[k]
		if len(ev.States) != w.count {
			return nil, fmt.Errorf("%s: told %d agent states, want %d", w.name, len(ev.States), w.count)
		}
		out = append(out, ev.States...)
	}
	return out, nil
}

// checkAlive returns why the first failed agent process failed.
func (s *swarm) checkAlive() error {
	for _, w := range s.workers {
		select {
		case <-w.ended:
			return w.failure()
		default:
		}
		w.mu.Lock()
		err := w.err
		w.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// pids are the agent processes other than the bench.
func (s *swarm) pids() []int {
	var out []int
	for _, p := range s.procs() {
		if pid := p.pid(); pid > 0 {
			out = append(out, pid)
		}
	}
	return out
}

// procs are the agent child processes.
func (s *swarm) procs() []*proc {
	var out []*proc
	for _, w := range s.workers {
		out = append(out, w.proc)
	}
	return out
}

// stop closes every agent process's input, which stops its agents, and
// waits for them to end; one that takes longer than agentProcStopWait is
// killed, and said so in the error.
func (s *swarm) stop() error {
	// Not under sendMu: closing ends a write blocked on a stuck process.
	for _, w := range s.workers {
		w.in.Close()
	}
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), agentProcStopWait)
	defer cancel()
	for _, w := range s.workers {
		select {
		case <-w.proc.exited():
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("%s did not stop within %s of its input closing; killed it", w.name, agentProcStopWait))
		}
		w.proc.kill()
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
