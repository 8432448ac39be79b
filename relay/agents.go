package relay

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/wire"
)

// Goroutines per agent connection: exactly one, parked in a read; each
// message read is handled by that goroutine, which then starts a fresh one
// for the next read and exits (readAgent says why). There is NO idle
// writer goroutine: frames for an
// agent go into its bounded queue, and the first enqueue into an empty queue
// starts an on-demand writer goroutine that drains the queue and exits when
// it is empty. 50k idle agents therefore cost 50k goroutines, not 100k, and
// a burst of fan-out costs one short-lived writer per agent that has
// something to write. The relay does not ping agents: agents send
// heartbeats, which it answers with a pong at least every other heartbeat
// (wire.CapHeartbeatPong, pongEvery; older agents ping instead), and a
// session silent for 3 heartbeat intervals is dropped by the read deadline.

// pongEvery is the gap, in half heartbeat intervals (3: 1.5 intervals),
// below which a heartbeat is not answered with a pong. Agents drop a
// session silent for 3 intervals; with heartbeats every interval a pong
// goes out every second heartbeat, 2 intervals apart, and a heartbeat late
// by up to half an interval still gets one. Half the pongs are half the write system calls of an idle
// fleet, the largest part of its cost to a relay (docs/bench.md).
const pongEvery = 3

// outFrame is one queued frame: either a prepared bundle or a message.
type outFrame struct {
	pm   *websocket.PreparedMessage
	msg  wire.Message
	hash string // for bundles, to log
}

// agentConn is one agent session.
type agentConn struct {
	s           *Server
	id          string
	workspace   string
	conn        *wire.Conn
	connectedAt time.Time

	// The fields below are guarded by s.mu (the relay-wide mutex): agent
	// state changes are rare and always touch relay-wide maps too.

	// applied is the hash live on the agent (Hello, Heartbeat, Result).
	applied string
	// sent is the bundle hash last queued to this session; it is not sent
	// again in this session unless the desired hash changes.
	sent string
	// deltas is whether the agent listed wire.CapBundleDelta in its Hello.
	deltas bool
	// whole is the hash the agent asked for whole (NeedBundle) after a
	// delta toward it failed; it gets no delta toward it again.
	whole string
	// pongs is whether the agent listed wire.CapHeartbeatPong: it sends no
	// pings, and its heartbeats are answered with pongs (pongEvery).
	pongs bool
	// pongedAt is when the session last wrote a pong (at first, when it
	// started). Only the goroutine reading the session touches it.
	pongedAt time.Time
	// queue holds frames not yet written and not yet taken by the writer;
	// at most cfg.SendQueue. When it is full the agent is a slow consumer
	// and is disconnected (4005): it must never stall fan-out to others.
	queue []outFrame
	// pending counts the frames enqueued and not yet written, the one
	// being written included; the enqueue that takes it from 0 starts a
	// writer with its frame, and the writer exits when it brings it back
	// to 0. A push's one frame per agent so goes out without the writer
	// taking s.mu, which the hub's assignments hold while they fan out
	// (see drain). Changed only under s.mu, except by the writer's
	// decrement.
	pending atomic.Int32
	// closed is set once the session is being torn down.
	closed bool
}

func (s *Server) serveAgent(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		http.Error(w, "client certificate required", http.StatusUnauthorized)
		return
	}
	// The identity comes from the verified peer certificate ONLY.
	id, err := pki.PeerIdentity(r.TLS)
	if err != nil {
		http.Error(w, "client certificate rejected", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		http.Error(w, "relay stopping", http.StatusServiceUnavailable)
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()

	up := wire.NewUpgrader()
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		s.wg.Done()
		return // the upgrader has answered
	}
	// The session runs on a goroutine of its own and this handler returns:
	// the HTTP connection's buffers, request and response are freed, and
	// so is this goroutine's stack, grown by the TLS handshake. A
	// WebSocket served from the handler keeps all of it for its lifetime,
	// a third of an idle session's memory.
	remote := r.RemoteAddr
	go func() {
		defer s.wg.Done()
		// Every read of the session happens right here or in readAgent,
		// never beneath startAgentSession's large frame.
		conn := wire.NewConn(ws, wire.MaxAgentMessage, 3*s.cfg.HeartbeatInterval)
		conn.Watch(s.dog)
		if !s.agentAllowed(conn, id) {
			return
		}
		m, _, err := conn.Read(s.sessions)
		if a := s.startAgentSession(conn, id, remote, m, err); a != nil {
			s.readNext(a)
		}
	}()
}

// agentAllowed refuses, and closes, a connection whose certificate is not
// an agent's of this trust domain.
func (s *Server) agentAllowed(conn *wire.Conn, id pki.Identity) bool {
	if id.Role == pki.RoleAgent && id.TrustDomain == s.cfg.TrustDomain {
		return true
	}
	s.log.Warn("refusing non-agent certificate on /v1/agent", "identity", id.String())
	conn.CloseAndWait(wire.CloseUnauthorizedRole, wire.ReasonUnauthorizedRole)
	return false
}

// startAgentSession takes an agent connection's first message (m, or the
// error reading it), which must be its Hello, registers the session and
// queues its Welcome. It returns nil when the session ended instead;
// otherwise the caller reads it (readAgent) and unregisters it.
func (s *Server) startAgentSession(conn *wire.Conn, id pki.Identity, remote string, m wire.Message, err error) *agentConn {
	interval := s.cfg.HeartbeatInterval
	log := s.log.With("agent", id.ID, "remote", remote)
	if err != nil {
		log.Info("agent session ended before hello", "err", err)
		return nil
	}
	hello, ok := m.(*wire.Hello)
	if !ok {
		log.Info("agent's first message is not hello", "type", m.Type())
		conn.CloseAndWait(wire.CloseMalformed, "first message must be hello")
		return nil
	}
	if hello.Protocol != wire.Protocol {
		conn.CloseAndWait(wire.CloseProtocolMismatch, wire.ProtocolMismatchReason(wire.Protocol, hello.Protocol))
		return nil
	}
	a := &agentConn{
		s: s, id: id.ID, workspace: id.Workspace, conn: conn, connectedAt: s.cfg.Clock.Now(),
		applied: hello.AppliedHash, deltas: slices.Contains(hello.Capabilities, wire.CapBundleDelta),
		pongs: slices.Contains(hello.Capabilities, wire.CapHeartbeatPong),
	}
	a.pongedAt = a.connectedAt
	old, refused := s.register(a)
	if refused != "" {
		log.Info("refusing revoked agent")
		conn.CloseAndWait(wire.CloseRevoked, refused)
		return nil
	}
	if old != nil {
		_ = old.conn.Close(wire.CloseSuperseded, wire.ReasonSuperseded)
	}
	log.Debug("agent connected", "applied", hello.AppliedHash)

	s.mu.Lock()
	s.enqueueLocked(a, outFrame{msg: &wire.Welcome{
		Protocol:            wire.Protocol,
		HeartbeatIntervalMs: interval.Milliseconds(),
		DesiredHash:         s.desired[a.id],
		Capabilities:        agentCapabilities,
	}})
	s.syncAgentLocked(a)
	s.mu.Unlock()
	return a
}

// readAgent reads a's messages and handles them until one needs a fresh
// goroutine (below), which it starts for the next read; it unregisters the
// session when it ends.
//
// Why a fresh goroutine: an idle session is one goroutine parked in a
// read, and its stack is most of the session's memory. Go grows a stack
// to the deepest point its goroutine ever reached and shrinks it only when
// under a quarter of it is in use. The parked read (gorilla, then
// crypto/tls) fits in 4 KiB; decoding a message with encoding/json does
// not, and would leave every agent that ever sent a result with an 8 KiB
// stack. So after any message but a heartbeat or an applied result the
// next read starts on a fresh goroutine, small again. Heartbeats, the
// steady traffic of an idle fleet, are decoded without encoding/json and
// answered with a pong within the stack the read needs (50,000-agent
// profiles show no stack growth on that path), so they are handled here
// and the same goroutine reads on: starting a goroutine per heartbeat cost
// the relay a tenth of its CPU in the scheduler, waking a second thread
// for each one. Applied results, as agents send them, take the same
// shortcut (wire/fast.go) and the same path.
func (s *Server) readAgent(a *agentConn) {
	for {
		// Not s.sessions: watching a context costs every parked session a
		// few hundred bytes, and stop closes registered sessions itself.
		m, _, err := a.conn.Read(context.Background())
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) && !errors.Is(err, context.Canceled) {
				s.log.Debug("agent session ended", "agent", a.id, "err", err)
			}
			s.unregister(a)
			return
		}
		switch m := m.(type) {
		case *wire.Heartbeat:
			now := s.cfg.Clock.Now()
			if !s.onHeartbeat(a, m, now) || (pongDue(a, now, s.cfg.HeartbeatInterval) && a.conn.Pong() != nil) {
				a.conn.CloseNow()
				s.unregister(a)
				return
			}
			continue
		case *wire.Result:
			s.onResult(a, m)
			if m.State == wire.ResultApplied && m.Reason == "" && m.Output == "" && m.File == "" {
				// In the form agents send it, an applied result is decoded
				// without encoding/json, as a heartbeat is, and every agent
				// sends one at once in a push: a goroutine for the next read
				// cost the relay a hand-off under s.mu per agent.
				continue
			}
		case *wire.NeedBundle:
			s.onNeedBundle(a, m)
		default:
			// A known type in the wrong direction is a protocol violation
			// of this session only.
			s.log.Info("unexpected message from agent", "agent", a.id, "type", m.Type())
			a.conn.CloseAndWait(wire.CloseMalformed, "unexpected "+m.Type().String())
			s.unregister(a)
			return
		}
		s.readNext(a)
		return
	}
}

// pongDue reports whether a heartbeat of a, at now, is to be answered with
// a pong, and if so takes now as the last pong's time.
func pongDue(a *agentConn, now time.Time, interval time.Duration) bool {
	if !a.pongs || now.Sub(a.pongedAt) < pongEvery*interval/2 {
		return false
	}
	a.pongedAt = now
	return true
}

// readNext starts the goroutine that reads a's next message, or ends the
// session when the relay is stopping.
func (s *Server) readNext(a *agentConn) {
	s.mu.Lock()
	next := s.goTrackedLocked(func() { s.readAgent(a) })
	s.mu.Unlock()
	if !next {
		a.conn.CloseNow()
		s.unregister(a)
	}
}

// register makes a the session of its agent. It returns the older session
// it replaced, or a non-empty reason when the agent is revoked.
func (s *Server) register(a *agentConn) (old *agentConn, refused string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if reason, ok := s.revoked[a.id]; ok {
		if reason == "" {
			reason = wire.ReasonRevoked
		}
		return nil, reason
	}
	a.applied = s.internLocked(a.applied)
	if h, ok := s.desired[a.id]; ok {
		// Keyed by the id the hub's message carried: key it by the
		// session's copy and let that one go.
		delete(s.desired, a.id)
		s.desired[a.id] = h
	}
	old = s.agents[a.id]
	if old != nil {
		old.closed = true
		old.queue = nil
	}
	s.agents[a.id] = a
	s.started.Add(1)
	s.up.addConnected(s.sessionLocked(a))
	s.kickLocked()
	return old, ""
}

// unregister ends a's session; a newer session of the same agent stays.
func (s *Server) unregister(a *agentConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a.closed = true
	a.queue = nil
	if s.agents[a.id] == a {
		delete(s.agents, a.id)
		s.up.addDisconnected(a.id)
		s.kickLocked()
	}
}

func (s *Server) sessionLocked(a *agentConn) wire.AgentSession {
	return wire.AgentSession{
		ID:          a.id,
		Workspace:   a.workspace,
		AppliedHash: a.applied,
		ConnectedAt: a.connectedAt.UnixMilli(),
		LastResult:  s.lastResult[a.id],
	}
}

// onHeartbeat records hb, which arrived at now, for the hub. It returns
// false when the relay is stopping: the session ends rather than read on.
func (s *Server) onHeartbeat(a *agentConn, hb *wire.Heartbeat, now time.Time) bool {
	s.heartbeats.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return false
	}
	a.applied = s.internLocked(hb.AppliedHash)
	// Heartbeats are coalesced: the latest per agent wins.
	s.up.heartbeats[a.id] = wire.AgentHeartbeat{Agent: a.id, AppliedHash: hb.AppliedHash, NginxUp: hb.NginxUp, At: now.UnixMilli()}
	if len(s.up.heartbeats) >= flushBatch {
		s.kickLocked()
	}
	return true
}

func (s *Server) onResult(a *agentConn, res *wire.Result) {
	s.results.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if res.State == wire.ResultApplied {
		a.applied = s.internLocked(res.Hash)
		// A heartbeat still queued was sent before this apply; going up
		// after the result, it would tell the hub the old bundle is live.
		if hb, ok := s.up.heartbeats[a.id]; ok {
			hb.AppliedHash = res.Hash
			s.up.heartbeats[a.id] = hb
		}
	}
	r := *res
	r.Hash = s.internLocked(r.Hash)
	if r.State == wire.ResultApplied {
		r.State = wire.ResultApplied // the constant, not the message's copy
	}
	s.lastResult[a.id] = &r
	// Results are never dropped: they stay pending until written upstream.
	// A result goes at once (an operator waits for it); those that follow
	// within FlushLinger share the next write.
	s.up.results = append(s.up.results, wire.AgentResult{Agent: a.id, Result: r})
	s.kickLocked()
}

// onNeedBundle sends the whole desired bundle to an agent that could not
// apply the delta toward it, once per desired hash and session.
func (s *Server) onNeedBundle(a *agentConn, m *wire.NeedBundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.Hash != s.desired[a.id] || a.whole == m.Hash {
		return
	}
	s.log.Debug("agent could not apply a delta; sending the whole bundle", "agent", a.id, "hash", m.Hash, "reason", m.Reason)
	a.whole, a.sent = m.Hash, ""
	s.syncAgentLocked(a)
}

// syncAgentLocked queues the agent's desired bundle when it differs from
// what the agent runs and was not already sent in this session: as a delta
// from the bundle the agent runs when the agent takes deltas and the hub
// sent that one, else whole, fetching it from the hub when it is not
// cached.
func (s *Server) syncAgentLocked(a *agentConn) {
	want := s.desired[a.id]
	if want == "" || a.closed || want == a.applied || want == a.sent {
		return
	}
	if a.deltas && a.applied != "" && a.whole != want {
		if pm := s.cache.delta(a.applied, want); pm != nil {
			a.sent = want
			s.deltasSent.Add(1)
			s.enqueueLocked(a, outFrame{pm: pm, hash: want})
			return
		}
	}
	b := s.cache.get(want)
	if b == nil {
		s.requestFetchLocked(want)
		return
	}
	a.sent = want
	s.bundlesSent.Add(1)
	s.enqueueLocked(a, outFrame{pm: b.pm, hash: want})
}

// enqueueLocked queues f for a and starts a writer when none runs. A full
// queue disconnects the agent (slow consumer) and counts it.
func (s *Server) enqueueLocked(a *agentConn, f outFrame) {
	if a.closed {
		return
	}
	if len(a.queue) >= s.cfg.SendQueue {
		a.closed = true
		a.queue = nil
		s.slow.Add(1)
		s.log.Warn("agent is a slow consumer: disconnecting", "agent", a.id, "queue", s.cfg.SendQueue)
		// Close writes a control frame with its own short deadline; it
		// does not wait for the stuck writer.
		if !s.goTrackedLocked(func() { _ = a.conn.Close(wire.CloseSlowConsumer, wire.ReasonSlowConsumer) }) {
			a.conn.CloseNow()
		}
		return
	}
	if a.pending.Add(1) > 1 {
		a.queue = append(a.queue, f) // the writer running takes it
		return
	}
	if !s.goTrackedLocked(func() { a.drain(f) }) {
		a.pending.Add(-1) // stopping: nothing more is written
	}
}

// drain writes f, then a's queue until pending says nothing is left, and
// exits. Only taking the next frame from the queue needs s.mu: an
// enqueue that finds a writer running appends to the queue under s.mu,
// in the same critical section as its increment, so a writer that sees
// pending above 0 after its decrement finds the frame there once it holds
// s.mu.
func (a *agentConn) drain(f outFrame) {
	s := a.s
	for {
		var err error
		if f.pm != nil {
			err = a.conn.WritePrepared(f.pm)
		} else {
			err = a.conn.Write(f.msg, nil)
		}
		if err != nil {
			s.log.Debug("write to agent failed", "agent", a.id, "err", err)
			a.conn.CloseNow()
			s.mu.Lock()
			a.closed = true
			a.queue = nil
			s.mu.Unlock()
			return // pending stays above 0: a closed session takes no frames
		}
		if a.pending.Add(-1) == 0 {
			return
		}
		s.mu.Lock()
		if len(a.queue) == 0 || a.closed {
			s.mu.Unlock()
			return
		}
		f = a.queue[0]
		a.queue = a.queue[1:]
		s.mu.Unlock()
	}
}

// revoke closes the sessions of ids with CloseRevoked and refuses them from
// now on.
func (s *Server) revoke(ids []string, reason string) {
	s.mu.Lock()
	var cut []*agentConn
	for _, id := range ids {
		s.revoked[id] = reason
		if a := s.agents[id]; a != nil {
			a.closed = true
			a.queue = nil
			cut = append(cut, a)
		}
	}
	s.mu.Unlock()
	if reason == "" {
		reason = wire.ReasonRevoked
	}
	for _, a := range cut {
		_ = a.conn.Close(wire.CloseRevoked, reason)
	}
}
