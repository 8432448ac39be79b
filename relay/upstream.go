package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/wire"
)

// flushBatch is the pending heartbeat or result count that flushes early,
// before FlushInterval.
const flushBatch = 1000

// Chunk sizes that keep every upstream message under its wire limit:
// a Result is at most 64 KiB, so 256 of them stay under 32 MiB.
const (
	resultsPerMessage    = 256
	heartbeatsPerMessage = 20000
	sessionsPerMessage   = 256
)

// Upstream timing.
const (
	upstreamPingWait = 30 * time.Second // read deadline; the hub's pongs extend it
	upstreamPing     = 10 * time.Second
)

// pending is the traffic waiting for the upstream writer, guarded by
// Server.mu. It is bounded by the number of agents (deltas and heartbeats
// hold at most one entry per agent) except results, which are never
// dropped: an agent sends one per apply, and they stay here until written.
type pending struct {
	connected    map[string]wire.AgentSession
	disconnected map[string]bool
	heartbeats   map[string]wire.AgentHeartbeat
	results      []wire.AgentResult
	fetch        []string
}

// reset clears everything a Snapshot supersedes (deltas and heartbeats);
// results stay.
func (p *pending) reset() {
	p.connected = map[string]wire.AgentSession{}
	p.disconnected = map[string]bool{}
	p.heartbeats = map[string]wire.AgentHeartbeat{}
	p.fetch = nil
}

func (p *pending) addConnected(a wire.AgentSession) {
	delete(p.disconnected, a.ID)
	p.connected[a.ID] = a
}

func (p *pending) addDisconnected(id string) {
	delete(p.connected, id)
	delete(p.heartbeats, id)
	p.disconnected[id] = true
}

func (s *Server) kickLocked() {
	select {
	case s.upKick <- struct{}{}:
	default:
	}
}

// requestFetchLocked queues one FetchBundle for hash unless one is already
// queued or in flight.
func (s *Server) requestFetchLocked(hash string) {
	if s.fetching[hash] || !wire.IsHash(hash) {
		return
	}
	s.fetching[hash] = true
	s.up.fetch = append(s.up.fetch, hash)
	s.kickLocked()
}

// runUpstream keeps one hub session at a time until ctx ends: hubs are
// tried in a shuffled order, failing over to the next on every failure,
// with exponential backoff and full jitter between attempts.
func (s *Server) runUpstream(ctx context.Context) {
	tlsCfg, err := pki.ClientTLSConfig(s.cfg.Source, pki.Peer{
		TrustDomain: s.cfg.TrustDomain,
		Roots:       s.cfg.Roots,
		Roles:       []pki.Role{pki.RoleHub},
	})
	if err != nil {
		s.log.Error("relay upstream: TLS config", "err", err)
		return
	}
	dialer := wire.NewDialer(tlsCfg)
	hubs := slices.Clone(s.cfg.Hubs)
	rand.Shuffle(len(hubs), func(i, j int) { hubs[i], hubs[j] = hubs[j], hubs[i] })
	attempt := 0
	for i := 0; ctx.Err() == nil; i++ {
		url := hubs[i%len(hubs)]
		ws, _, err := dialer.DialContext(ctx, url, nil)
		if err == nil {
			conn := wire.NewConn(ws, wire.MaxHubMessage, upstreamPingWait)
			var established bool
			established, err = s.upstreamSession(ctx, conn)
			if established {
				attempt = 0
			}
		}
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("relay upstream: hub session ended", "hub", url, "err", err)
		d := backoff(s.cfg.MinBackoff, s.cfg.MaxBackoff, attempt)
		attempt++
		select {
		case <-ctx.Done():
			return
		case <-s.cfg.Clock.After(d):
		}
	}
}

// backoff returns a full-jitter delay: uniform in [0, min(max, base*2^n)).
func backoff(base, limit time.Duration, n int) time.Duration {
	d := limit
	if n < 30 && base<<n < limit {
		d = base << n
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// upstreamSession runs one hub session: RelayHello, Snapshot, then the
// reader goroutine handles the hub's messages while this goroutine writes
// batches. established is true once the Snapshot was written.
func (s *Server) upstreamSession(ctx context.Context, conn *wire.Conn) (established bool, err error) {
	defer conn.CloseNow()
	if err := conn.Write(&wire.RelayHello{Protocol: wire.Protocol, RelayVersion: s.cfg.Version, Capabilities: hubCapabilities}, nil); err != nil {
		return false, err
	}
	s.mu.Lock()
	snap := wire.Snapshot{Agents: make([]wire.AgentSession, 0, len(s.agents))}
	for _, a := range s.agents {
		if !a.closed {
			snap.Agents = append(snap.Agents, s.sessionLocked(a))
		}
	}
	// The Snapshot supersedes queued deltas and heartbeats; in-flight
	// fetches died with the previous session and are asked again.
	s.up.reset()
	clear(s.fetching)
	for _, a := range s.agents {
		s.syncAgentLocked(a)
	}
	s.mu.Unlock()
	if err := s.writeSnapshot(conn, &snap); err != nil {
		return false, err
	}
	s.setUpstream(true)
	defer s.setUpstream(false)
	s.log.Info("relay upstream: connected", "agents", len(snap.Agents))

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	s.wg.Go(func() {
		readErr <- s.upstreamRead(sctx, conn)
		cancel()
	})
	flush := s.cfg.Clock.After(s.cfg.FlushInterval)
	ping := s.cfg.Clock.After(upstreamPing)
	var flushed time.Time       // when the last flush began
	var linger <-chan time.Time // set while a kicked flush waits out FlushLinger
	for {
		select {
		case <-sctx.Done():
			conn.CloseNow()
			return true, <-readErr
		case <-s.upKick:
			if linger != nil {
				continue
			}
			if d := s.cfg.FlushLinger - s.cfg.Clock.Now().Sub(flushed); d > 0 {
				linger = s.cfg.Clock.After(d)
				continue
			}
		case <-linger:
			linger = nil
		case <-flush:
			flush = s.cfg.Clock.After(s.cfg.FlushInterval)
		case <-ping:
			ping = s.cfg.Clock.After(upstreamPing)
			if err := conn.Ping(); err != nil {
				conn.CloseNow()
				return true, errors.Join(err, <-readErr)
			}
			continue
		}
		flushed = s.cfg.Clock.Now()
		if err := s.flush(conn); err != nil {
			conn.CloseNow()
			return true, errors.Join(err, <-readErr)
		}
	}
}

// writeSnapshot writes snap; when it is too large for one message the
// last results' nginx output is left out (the results themselves went up
// when they happened).
func (s *Server) writeSnapshot(conn *wire.Conn, snap *wire.Snapshot) error {
	err := conn.Write(snap, nil)
	if !errors.Is(err, wire.ErrTooLarge) {
		return err
	}
	for i := range snap.Agents {
		if r := snap.Agents[i].LastResult; r != nil {
			c := *r
			c.Output = ""
			snap.Agents[i].LastResult = &c
		}
	}
	return conn.Write(snap, nil)
}

func (s *Server) setUpstream(up bool) {
	s.mu.Lock()
	s.upConnected = up
	s.mu.Unlock()
}

// flush writes everything pending. Results that could not be written go
// back to the front of the queue; deltas and heartbeats lost with a broken
// session are covered by the next Snapshot.
func (s *Server) flush(conn *wire.Conn) error {
	s.mu.Lock()
	var delta wire.SessionDelta
	for _, a := range s.up.connected {
		delta.Connected = append(delta.Connected, a)
	}
	for id := range s.up.disconnected {
		delta.Disconnected = append(delta.Disconnected, id)
	}
	hbs := slices.Collect(maps.Values(s.up.heartbeats))
	results := s.up.results
	fetch := s.up.fetch
	s.up.connected = map[string]wire.AgentSession{}
	s.up.disconnected = map[string]bool{}
	s.up.heartbeats = map[string]wire.AgentHeartbeat{}
	s.up.results = nil
	s.up.fetch = nil
	s.mu.Unlock()

	for len(delta.Connected) > 0 || len(delta.Disconnected) > 0 {
		part := wire.SessionDelta{Disconnected: delta.Disconnected}
		n := min(len(delta.Connected), sessionsPerMessage)
		part.Connected = delta.Connected[:n]
		delta.Connected, delta.Disconnected = delta.Connected[n:], nil
		if err := conn.Write(&part, nil); err != nil {
			s.requeueResults(results)
			return fmt.Errorf("write session delta: %w", err)
		}
	}
	for len(results) > 0 {
		n := min(len(results), resultsPerMessage)
		if err := conn.Write(&wire.Results{Items: results[:n]}, nil); err != nil {
			s.requeueResults(results)
			return fmt.Errorf("write results: %w", err)
		}
		results = results[n:]
	}
	for len(hbs) > 0 {
		n := min(len(hbs), heartbeatsPerMessage)
		if err := conn.Write(&wire.Heartbeats{Items: hbs[:n]}, nil); err != nil {
			return fmt.Errorf("write heartbeats: %w", err)
		}
		hbs = hbs[n:]
	}
	for _, h := range fetch {
		if err := conn.Write(&wire.FetchBundle{Hash: h}, nil); err != nil {
			return fmt.Errorf("write fetch: %w", err)
		}
		s.fetches.Add(1)
	}
	return nil
}

func (s *Server) requeueResults(rs []wire.AgentResult) {
	if len(rs) == 0 {
		return
	}
	s.mu.Lock()
	s.up.results = append(slices.Clip(rs), s.up.results...)
	s.mu.Unlock()
}

// upstreamRead handles the hub's messages until the session ends.
func (s *Server) upstreamRead(ctx context.Context, conn *wire.Conn) error {
	for {
		m, payload, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *wire.Desired:
			s.onDesired(m)
		case *wire.BundleData:
			s.fanOut(-1) // assignments follow
			s.onBundleData(m, payload)
		case *wire.DeltaData:
			s.fanOut(-1)
			s.onDeltaData(m, payload)
		case *wire.Revoke:
			s.revoke(m.Agents, m.Reason)
		default:
			_ = conn.Close(wire.CloseMalformed, "unexpected "+m.Type().String())
			return fmt.Errorf("hub sent unexpected %s", m.Type())
		}
	}
}

// fanOut tells Config.FanOut, when set, that a fan-out may begin.
func (s *Server) fanOut(agents int) {
	if s.cfg.FanOut != nil {
		s.cfg.FanOut(agents)
	}
}

func (s *Server) onDesired(d *wire.Desired) {
	s.mu.Lock()
	changed := 0
	var sync []*agentConn // the connected agents among them
	for _, it := range d.Items {
		if it.Agent == "" || !wire.IsHash(it.Hash) {
			s.log.Warn("relay: ignoring invalid desired item", "agent", it.Agent)
			continue
		}
		if old := s.desired[it.Agent]; old != it.Hash {
			id := it.Agent
			a := s.agents[id]
			if a != nil {
				id = a.id // one copy of the id per agent, not one per message
				sync = append(sync, a)
			}
			s.setDesiredLocked(id, it.Hash)
			changed++
		}
	}
	if changed == 0 {
		s.mu.Unlock()
		return
	}
	s.fanOut(changed)
	for _, a := range sync { // an agent listed twice is synced once: see syncAgentLocked
		s.syncAgentLocked(a)
	}
	// Bundles no agent wants any more leave the cache, and so do the
	// deltas toward them.
	var gone []string
	for h := range s.cache.hashes() {
		if s.wanted[h] == 0 {
			gone = append(gone, h)
			s.cache.drop(h)
		}
	}
	s.cache.dropDeltas(func(h string) bool { return s.wanted[h] > 0 })
	s.desiredChangedLocked(s.cfg.Clock.Now())
	s.mu.Unlock()
	for _, h := range gone {
		s.cache.removeFile(h)
	}
}

// setDesiredLocked assigns hash to agent id, keeping the count of agents
// that want each hash.
func (s *Server) setDesiredLocked(id, hash string) {
	if old, ok := s.desired[id]; ok {
		if s.wanted[old]--; s.wanted[old] <= 0 {
			delete(s.wanted, old)
			delete(s.hashes, old)
		}
	}
	if c, ok := s.hashes[hash]; ok {
		hash = c
	} else {
		s.hashes[hash] = hash
	}
	s.desired[id] = hash
	s.wanted[hash]++
}

// internLocked returns the relay's one copy of hash when some agent wants
// it, else hash. Every message decodes its own copy of a hash; a relay
// that kept them (an agent's applied hash, its desired one, its last
// result's) held three 64-byte strings per agent where one shared string
// per bundle does.
func (s *Server) internLocked(hash string) string {
	if c, ok := s.hashes[hash]; ok {
		return c
	}
	return hash
}

// persistDesired writes the desired map to disk once it has changed and
// then stayed unchanged for desiredPersistQuiet, or desiredPersistMax
// after the first change not yet written, until ctx ends, and once more
// then. A write per Desired message cost a full JSON encoding and an
// fsync of the whole map on the upstream reader, thousands of times while
// a fleet connects; a write a second still wrote the map two or three
// times while a push's assignments came in, in the push's own CPU. A
// relay that dies loses at most the last few seconds, which the hub sends
// again when it is back.
func (s *Server) persistDesired(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			s.writeDesiredIfDirty(time.Time{})
			return
		case <-s.cfg.Clock.After(desiredPersistQuiet / 4):
		}
		s.writeDesiredIfDirty(s.cfg.Clock.Now())
	}
}

const (
	desiredPersistQuiet = time.Second
	desiredPersistMax   = 5 * time.Second
)

// desiredChangedLocked records that desired changed at now.
func (s *Server) desiredChangedLocked(now time.Time) {
	s.desiredChanged = now
	if s.desiredDirtySince.IsZero() {
		s.desiredDirtySince = now
	}
}

// writeDesiredIfDirty writes the desired map if it changed and, unless now
// is zero, has settled (persistDesired).
func (s *Server) writeDesiredIfDirty(now time.Time) {
	s.mu.Lock()
	since := s.desiredDirtySince
	if since.IsZero() || !now.IsZero() && now.Sub(s.desiredChanged) < desiredPersistQuiet && now.Sub(since) < desiredPersistMax {
		s.mu.Unlock()
		return
	}
	s.desiredDirtySince = time.Time{}
	s.desiredBuf = appendDesiredJSON(s.desiredBuf[:0], s.desired)
	s.mu.Unlock()
	if err := s.cache.writeDesired(s.desiredBuf); err != nil {
		s.log.Error("relay: persisting desired map", "err", err)
		s.mu.Lock()
		if s.desiredDirtySince.IsZero() { // still unwritten since then
			s.desiredDirtySince = since
		}
		s.mu.Unlock()
	}
}

func (s *Server) onBundleData(m *wire.BundleData, payload []byte) {
	if !wire.IsHash(m.Hash) || m.Encoding != wire.EncodingGzip || m.Size < 0 {
		s.log.Warn("relay: ignoring invalid bundle data", "hash", m.Hash, "encoding", m.Encoding)
		return
	}
	// payload aliases the read buffer of this frame only; keep our copy.
	b, err := newCachedBundle(m.Hash, m.Size, slices.Clone(payload))
	if err != nil {
		s.log.Error("relay: preparing bundle", "hash", m.Hash, "err", err)
		return
	}
	if err := s.cache.writeBundle(b); err != nil {
		s.log.Error("relay: caching bundle on disk", "hash", m.Hash, "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache.put(b)
	delete(s.fetching, m.Hash)
	for _, a := range s.agents {
		if s.desired[a.id] == m.Hash {
			s.syncAgentLocked(a)
		}
	}
}

// onDeltaData keeps a delta from the hub for the agents that run its base.
// The hub sends it before the assignments that use it; agents that were
// assigned its bundle already got the whole one.
func (s *Server) onDeltaData(m *wire.DeltaData, payload []byte) {
	if !wire.IsHash(m.Hash) || !wire.IsHash(m.Base) || m.Size < 0 ||
		(m.Encoding != wire.EncodingGzip && m.Encoding != wire.EncodingIdentity) {
		s.log.Warn("relay: ignoring invalid delta data", "hash", m.Hash, "base", m.Base, "encoding", m.Encoding)
		return
	}
	// Prepare copies the payload into the frame, which outlives this read.
	pm, err := wire.Prepare(&wire.BundleDelta{Hash: m.Hash, Base: m.Base, Encoding: m.Encoding, Size: m.Size}, payload)
	if err != nil {
		s.log.Error("relay: preparing delta", "hash", m.Hash, "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache.putDelta(m.Base, m.Hash, pm)
}
