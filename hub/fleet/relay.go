package fleet

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/wire"
)

// relayPingWait is the hub's read deadline on a relay session: relays ping
// every 10 s, so three missed pings end the session.
const relayPingWait = 30 * time.Second

// desiredPerMessage keeps a Desired message well under LimitDesired (an
// item is about 130 bytes of JSON).
const desiredPerMessage = 20000

// maxPendingRevokes bounds a relay's queued revocations; beyond it the
// session is cut, and the relay resyncs with a Snapshot.
const maxPendingRevokes = 100000

// relaySession is one relay's session with this hub. Its writer goroutine
// drains what the fleet queued; the handler goroutine reads.
type relaySession struct {
	f           *Fleet
	id          string
	conn        *wire.Conn
	connectedAt time.Time
	kick        chan struct{}
	// deltas is whether the relay listed wire.CapBundleDelta.
	deltas bool

	// Guarded by Fleet.mu:
	agents  map[string]bool   // agents with a live session on this relay
	desired map[string]string // assignments not yet written, by agent
	bundles []*bundle         // bundle bytes to write before assignments
	sent    map[string]bool   // bundle hashes written in this session
	deltaQ  []*delta          // deltas to write before assignments
	sentD   map[deltaKey]bool // deltas written in this session
	lastB   *bundle           // the bundle queued last, in sent
	lastD   *delta            // the delta queued last, in sentD
	revoke  []string          // revocations not yet written
	reason  string            // of the latest revocation
	closed  bool
}

// queueDesiredLocked assigns b to agent id, sending b's bytes first unless
// this session already carried them, and d (the delta to b from what the
// agent runs, nil when there is none) likewise. The relay needs the whole
// bundle even when it has the delta: agents that cannot use the delta ask
// for it.
func (rs *relaySession) queueDesiredLocked(id string, b *bundle, d *delta) {
	if rs.closed {
		return
	}
	// Nearly every agent of a push names the bundle and delta the one
	// before it did: those are not looked up again.
	if b != rs.lastB {
		if !rs.sent[b.hash] {
			rs.sent[b.hash] = true
			rs.bundles = append(rs.bundles, b)
		}
		rs.lastB = b
	}
	if d != nil && d != rs.lastD {
		if k := (deltaKey{d.base, d.hash}); !rs.sentD[k] {
			rs.sentD[k] = true
			rs.deltaQ = append(rs.deltaQ, d)
		}
		rs.lastD = d
	}
	rs.desired[id] = b.hash
	wake(rs.kick)
}

func (rs *relaySession) queueRevokeLocked(ids []string, reason string) {
	if rs.closed {
		return
	}
	if len(rs.revoke)+len(ids) > maxPendingRevokes {
		rs.f.log.Warn("fleet: relay has too many queued revocations; resyncing", "relay", rs.id)
		rs.conn.CloseNow()
		return
	}
	rs.revoke = append(rs.revoke, ids...)
	rs.reason = reason
	wake(rs.kick)
}

// ServeRelay serves GET /v1/relay on the hub's mTLS listener: the peer
// must hold a relay certificate of this trust domain.
func (f *Fleet) ServeRelay(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil {
		http.Error(w, "client certificate required", http.StatusUnauthorized)
		return
	}
	id, err := pki.PeerIdentity(r.TLS)
	if err != nil {
		http.Error(w, "client certificate rejected", http.StatusForbidden)
		return
	}
	f.mu.Lock()
	if f.stopping {
		f.mu.Unlock()
		http.Error(w, "hub stopping", http.StatusServiceUnavailable)
		return
	}
	f.wg.Add(1)
	f.mu.Unlock()
	defer f.wg.Done()

	up := wire.NewUpgrader()
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	conn := wire.NewConn(ws, wire.LimitSnapshot, relayPingWait)
	log := f.log.With("relay", id.ID, "remote", r.RemoteAddr)
	if id.Role != pki.RoleRelay || id.TrustDomain != f.cfg.TrustDomain {
		log.Warn("fleet: refusing non-relay certificate on /v1/relay", "identity", id.String())
		conn.CloseAndWait(wire.CloseUnauthorizedRole, wire.ReasonUnauthorizedRole)
		return
	}
	ctx := r.Context()
	m, _, err := conn.Read(ctx)
	if err != nil {
		return
	}
	hello, ok := m.(*wire.RelayHello)
	if !ok {
		conn.CloseAndWait(wire.CloseMalformed, "first message must be relay hello")
		return
	}
	if hello.Protocol != wire.Protocol {
		conn.CloseAndWait(wire.CloseProtocolMismatch, wire.ProtocolMismatchReason(wire.Protocol, hello.Protocol))
		return
	}
	m, _, err = conn.Read(ctx)
	if err != nil {
		return
	}
	snap, ok := m.(*wire.Snapshot)
	if !ok {
		conn.CloseAndWait(wire.CloseMalformed, "second message must be a snapshot")
		return
	}
	rs := &relaySession{
		f: f, id: id.ID, conn: conn, connectedAt: f.cfg.Now(), kick: make(chan struct{}, 1),
		agents: map[string]bool{}, desired: map[string]string{}, sent: map[string]bool{},
		deltas: slices.Contains(hello.Capabilities, wire.CapBundleDelta), sentD: map[deltaKey]bool{},
	}
	f.addRelay(rs, snap.Agents)
	log.Info("fleet: relay connected", "agents", len(snap.Agents), "version", hello.RelayVersion)
	defer f.removeRelay(rs)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	f.wg.Go(func() { rs.writeLoop(sctx) })
	for {
		m, _, err := conn.Read(sctx)
		if err != nil {
			if ctx.Err() == nil {
				log.Info("fleet: relay disconnected", "err", err)
			}
			return
		}
		switch m := m.(type) {
		case *wire.SessionDelta:
			f.onDelta(rs, m)
		case *wire.Heartbeats:
			f.onHeartbeats(rs, m)
		case *wire.Results:
			f.onResults(rs, m)
		case *wire.FetchBundle:
			f.onFetch(rs, m.Hash)
		default:
			log.Warn("fleet: unexpected message from relay", "type", m.Type())
			conn.CloseAndWait(wire.CloseMalformed, "unexpected "+m.Type().String())
			return
		}
	}
}

// writeLoop writes what the fleet queued for rs until ctx ends or a write
// fails (then the session is cut; the relay reconnects and resyncs).
func (rs *relaySession) writeLoop(ctx context.Context) {
	f := rs.f
	for {
		select {
		case <-ctx.Done():
			return
		case <-rs.kick:
		}
		f.mu.Lock()
		bundles, deltas, desired, revoke, reason := rs.bundles, rs.deltaQ, rs.desired, rs.revoke, rs.reason
		// Sized as the last: in a push the next batch is as large, and a
		// map grown from empty rehashed its way there (3 % of the hub's
		// CPU in a 50,000-agent push).
		rs.bundles, rs.deltaQ, rs.desired, rs.revoke = nil, nil, make(map[string]string, len(desired)), nil
		f.mu.Unlock()
		if err := rs.write(bundles, deltas, desired, revoke, reason); err != nil {
			if ctx.Err() == nil {
				f.log.Warn("fleet: writing to relay failed; cutting the session", "relay", rs.id, "err", err)
			}
			rs.conn.CloseNow()
			return
		}
	}
}

func (rs *relaySession) write(bundles []*bundle, deltas []*delta, desired map[string]string, revoke []string, reason string) error {
	for _, b := range bundles {
		if err := rs.conn.Write(&wire.BundleData{Hash: b.hash, Encoding: wire.EncodingGzip, Size: b.size}, b.payload); err != nil {
			return err
		}
	}
	for _, d := range deltas {
		if err := rs.conn.Write(&wire.DeltaData{Hash: d.hash, Base: d.base, Encoding: d.encoding, Size: d.size}, d.payload); err != nil {
			return err
		}
	}
	items := make([]wire.DesiredBundle, 0, len(desired))
	for id, h := range desired {
		items = append(items, wire.DesiredBundle{Agent: id, Hash: h})
	}
	for chunk := range slices.Chunk(items, desiredPerMessage) {
		if err := rs.conn.Write(&wire.Desired{Items: chunk}, nil); err != nil {
			return err
		}
	}
	for chunk := range slices.Chunk(revoke, 10000) {
		if err := rs.conn.Write(&wire.Revoke{Agents: chunk, Reason: reason}, nil); err != nil {
			return err
		}
	}
	return nil
}

// addRelay registers rs, replacing an older session of the same relay, and
// takes its snapshot as the complete list of the relay's agents.
func (f *Fleet) addRelay(rs *relaySession, agents []wire.AgentSession) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if old := f.relays[rs.id]; old != nil {
		old.closed = true
		old.conn.CloseNow()
		for id := range old.agents {
			if a := f.agents[id]; a != nil && a.relay == old {
				delete(f.agents, id)
			}
		}
	}
	f.relays[rs.id] = rs
	for _, s := range agents {
		f.connectLocked(rs, s)
	}
	f.relayWrites[rs.id] = f.relayRecordLocked(rs)
	wake(f.kick)
	wake(f.flushKick)
}

// removeRelay ends rs: its agents are offline unless they already moved.
func (f *Fleet) removeRelay(rs *relaySession) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rs.closed = true
	for id := range rs.agents {
		f.disconnectLocked(rs, id)
	}
	if f.relays[rs.id] == rs {
		delete(f.relays, rs.id)
		delete(f.relayWrites, rs.id)
		f.relayGone = append(f.relayGone, rs.id)
	}
	wake(f.flushKick)
}

// connectLocked records an agent session reported by rs.
func (f *Fleet) connectLocked(rs *relaySession, s wire.AgentSession) {
	if s.ID == "" || s.Workspace == "" {
		return
	}
	now := f.cfg.Now()
	if a := f.agents[s.ID]; a != nil && a.relay != rs {
		delete(a.relay.agents, s.ID) // moved here from another relay of ours
	}
	delete(f.gone[rs.id], s.ID) // back on the same relay before its disconnect was written
	a := &agentState{id: s.ID, ws: s.Workspace, relay: rs, applied: s.AppliedHash, seenWritten: now}
	f.agents[s.ID] = a
	rs.agents[s.ID] = true
	f.fresh[s.ID] = true
	st := f.statusLocked(a, now)
	if r := s.LastResult; r != nil {
		setResult(&st, r, now)
	}
	f.status[s.ID] = st
}

func (f *Fleet) disconnectLocked(rs *relaySession, id string) {
	delete(rs.agents, id)
	a := f.agents[id]
	if a == nil || a.relay != rs {
		return
	}
	delete(f.agents, id)
	if f.gone[rs.id] == nil {
		f.gone[rs.id] = map[string]bool{}
	}
	f.gone[rs.id][id] = true
}

// statusLocked is the pending status of a, keeping a result already queued.
func (f *Fleet) statusLocked(a *agentState, now time.Time) store.AgentStatus {
	st, ok := f.status[a.id]
	if !ok {
		st = store.AgentStatus{ID: a.id}
	}
	st.Relay, st.AppliedHash, st.LastSeen = a.relay.id, a.applied, now
	return st
}

func setResult(st *store.AgentStatus, r *wire.Result, now time.Time) {
	st.LastResult, st.LastError, st.ResultHash = r.State, r.Reason, r.Hash
	st.ResultOutput, st.ResultAt = wire.TruncateOutput(r.Output), now
	if r.State == wire.ResultApplied {
		st.AppliedHash = r.Hash
		st.LastError = ""
	}
	if st.LastResult != wire.ResultApplied && st.LastError == "" {
		st.LastError = st.LastResult
	}
}

func (f *Fleet) onDelta(rs *relaySession, d *wire.SessionDelta) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range d.Disconnected {
		f.disconnectLocked(rs, id)
	}
	for _, s := range d.Connected {
		f.connectLocked(rs, s)
	}
	if len(d.Connected) > 0 {
		wake(f.kick)
	}
	// The relay's record carries its agent count: one row per flush.
	if f.relays[rs.id] == rs {
		f.relayWrites[rs.id] = f.relayRecordLocked(rs)
	}
	wake(f.flushKick)
}

// onHeartbeats writes nothing unless an agent's applied bundle changed or
// its last_seen is older than SeenInterval: heartbeats are the bulk of the
// traffic and must not become one write each.
func (f *Fleet) onHeartbeats(rs *relaySession, hbs *wire.Heartbeats) {
	now := f.cfg.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, hb := range hbs.Items {
		a := f.agents[hb.Agent]
		if a == nil || a.relay != rs {
			continue
		}
		if hb.AppliedHash == a.applied && now.Sub(a.seenWritten) < f.cfg.SeenInterval {
			continue
		}
		a.applied, a.seenWritten = hb.AppliedHash, now
		f.status[a.id] = f.statusLocked(a, now)
	}
}

func (f *Fleet) onResults(rs *relaySession, res *wire.Results) {
	now := f.cfg.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range res.Items {
		a := f.agents[it.Agent]
		if a == nil || a.relay != rs {
			continue
		}
		if it.Result.State == wire.ResultApplied {
			a.applied = it.Result.Hash
		}
		st := f.statusLocked(a, now)
		setResult(&st, &it.Result, now)
		f.status[a.id] = st
	}
	wake(f.flushKick)
}

// onFetch answers a FetchBundle with the bundle's bytes when this hub has
// it compiled. Otherwise the hash belongs to a revision this hub never
// computed; the relay gets a current assignment, with its bytes, as soon as
// the agent's session is reconciled.
func (f *Fleet) onFetch(rs *relaySession, hash string) {
	b := f.revs.lookup(hash)
	f.mu.Lock()
	defer f.mu.Unlock()
	if b == nil {
		f.log.Debug("fleet: relay asked for a bundle this hub has not compiled", "relay", rs.id, "hash", hash)
		return
	}
	if !rs.closed {
		rs.sent[hash] = true
		rs.bundles = append(rs.bundles, b)
		wake(rs.kick)
	}
}
