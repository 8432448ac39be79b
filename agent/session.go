package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/wire"
)

// DefaultMaxBundleSize is the largest uncompressed bundle a Session accepts.
const DefaultMaxBundleSize = 256 << 20

// LiveHasher reports the hash of the live bundle; *Applier is one.
type LiveHasher interface {
	Live() (string, error)
}

// Keeper returns a bundle the agent still has, by hash, or nil; deltas
// apply to it. *Applier (its release directories) and *Loop (after
// KeepApplied) are Keepers.
type Keeper interface {
	Kept(hash string) *nginx.Bundle
}

// Submitter takes a desired bundle; *Loop is one.
type Submitter interface {
	Submit(b *nginx.Bundle)
}

// Session is the agent's connection to its relays: it says hello with the
// live hash, receives bundles and hands them to the coalescing Loop, sends
// every apply outcome as a Result (wire Results are never dropped: the last
// one is sent again after a reconnect until a write succeeds) and a
// Heartbeat every interval the relay asks for. While it is disconnected
// nginx keeps serving the last good configuration.
//
// Goroutines: Run's own (reading), plus one heartbeat goroutine per
// connected session.
type Session struct {
	// Relays are wss:// URLs of relays' (or hubs') /v1/agent endpoints.
	Relays []string
	// TLS is the client config: pki.ClientTLSConfig with the agent's
	// certificate, accepting peer role relay or hub.
	TLS *tls.Config
	// Applier tells the live hash for Hello and heartbeats.
	Applier LiveHasher
	// Loop receives verified bundles; wire its onResult to Report.
	Loop Submitter
	// Kept, when set, holds the bundles deltas apply to, and the session
	// offers wire.CapBundleDelta: relays then send a change as the files
	// that changed rather than the whole bundle.
	Kept Keeper
	// NginxUp, when set, is reported in heartbeats.
	NginxUp func() bool
	// Limits bound decoded bundles; MaxBundleSize bounds decompression
	// (default DefaultMaxBundleSize).
	Limits        nginx.Limits
	MaxBundleSize int
	// MinBackoff and MaxBackoff bound reconnect delays (defaults 500 ms,
	// 30 s), drawn with full jitter.
	MinBackoff, MaxBackoff time.Duration
	// NetDialContext, when set, opens the TCP connections; the bench uses
	// it to spread simulated agents over loopback source addresses.
	NetDialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnConnect, when set, is called each time a relay session is
	// established (its Welcome arrived); the bench counts connected
	// simulated agents with it.
	OnConnect func()
	// OnTLS, when set, is called with the state of each TLS connection to
	// a relay once its WebSocket is open (tests check the key exchange
	// and resumption with it).
	OnTLS func(tls.ConnectionState)
	// OnDelta, when set, is called for each BundleDelta received, with
	// whether it built the bundle it names (false: NeedBundle was sent).
	OnDelta func(applied bool)
	// Watchdog, when set, bounds a relay session's silence and writes in
	// place of a socket deadline per frame (wire.Watchdog); its owner runs
	// it. The bench shares one among thousands of simulated agents.
	Watchdog *wire.Watchdog
	// Version is sent in Hello.
	Version string
	// Clock defaults to RealClock; Logger to a discarding logger.
	Clock  Clock
	Logger *slog.Logger

	mu sync.Mutex // guards conn and pending
	// conn is the current relay connection, nil while disconnected.
	conn *wire.Conn
	// pending is the last Result not yet written to a relay.
	pending *wire.Result

	// sendMu orders heartbeats and results: a heartbeat reads the live
	// hash and is written while holding it, and so is a result. Without
	// it a heartbeat could read the old hash, lose the race to the result
	// of the apply that replaced it, and tell the relay and the hub, after
	// the result, that the old bundle is live; the next change would then
	// be a delta from a bundle the agent no longer has.
	sendMu sync.Mutex

	// readAt and appliedAt are when, on the current connection, the last
	// message from the relay was read and the last applied Result was
	// written (Clock, Unix nanoseconds; appliedAt is math.MinInt64 until
	// one is). The heartbeat skips a beat when both are recent (see
	// heartbeat).
	readAt, appliedAt atomic.Int64
}

// Report turns an apply outcome into a Result and sends it (or keeps it
// for the next session). Use it as the Loop's onResult.
func (s *Session) Report(res Result) {
	r := &wire.Result{
		Hash:       res.Hash,
		State:      string(res.State),
		Reason:     res.Reason,
		Output:     wire.TruncateOutput(res.NginxOutput),
		File:       res.File,
		Line:       res.Line,
		DurationMs: res.Durations.Total.Milliseconds(),
	}
	s.mu.Lock()
	s.pending = r
	s.mu.Unlock()
	s.sendPending()
}

// sendPending writes the pending Result if connected; it stays pending on
// failure.
func (s *Session) sendPending() {
	s.mu.Lock()
	conn, r := s.conn, s.pending
	s.mu.Unlock()
	if conn == nil || r == nil {
		return
	}
	s.sendMu.Lock()
	err := conn.Write(r, nil)
	s.sendMu.Unlock()
	if err != nil {
		return
	}
	if r.State == string(Applied) {
		s.appliedAt.Store(s.Clock.Now().UnixNano())
	}
	s.mu.Lock()
	if s.pending == r {
		s.pending = nil
	}
	s.mu.Unlock()
}

func (s *Session) defaults() {
	if s.Clock == nil {
		s.Clock = RealClock
	}
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	if s.MaxBundleSize <= 0 {
		s.MaxBundleSize = DefaultMaxBundleSize
	}
	if s.MinBackoff <= 0 {
		s.MinBackoff = 500 * time.Millisecond
	}
	if s.MaxBackoff < s.MinBackoff {
		s.MaxBackoff = max(30*time.Second, s.MinBackoff)
	}
}

// Run connects to the relays in turn (shuffled, failing over on every
// error) with exponential backoff and full jitter, until ctx ends. It
// returns ctx's error after its goroutines have ended.
func (s *Session) Run(ctx context.Context) error {
	if len(s.Relays) == 0 {
		return errors.New("agent session: no relays")
	}
	if s.TLS == nil || s.Applier == nil || s.Loop == nil {
		return errors.New("agent session: TLS, Applier and Loop are required")
	}
	s.defaults()
	relays := slices.Clone(s.Relays)
	rand.Shuffle(len(relays), func(i, j int) { relays[i], relays[j] = relays[j], relays[i] })
	dialer := wire.NewDialer(s.TLS)
	if s.NetDialContext != nil {
		dialer.NetDialContext = wire.DialWithTimeout(s.NetDialContext)
	}
	attempt := 0
	for i := 0; ; i++ {
		url := relays[i%len(relays)]
		established, err := s.session(ctx, dialer, url)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if established {
			attempt = 0
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) && (ce.Code == wire.CloseRevoked || ce.Code == wire.CloseProtocolMismatch || ce.Code == wire.CloseUnauthorizedRole) {
			// Retrying will not heal these: wait the longest delay.
			attempt = 30
		}
		s.Logger.Warn("relay session ended", "relay", url, "err", err)
		d := sessionBackoff(s.MinBackoff, s.MaxBackoff, attempt)
		attempt++
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.Clock.After(d):
		}
	}
}

// sessionBackoff is full jitter: uniform in [0, min(limit, base*2^n)].
func sessionBackoff(base, limit time.Duration, n int) time.Duration {
	d := limit
	if n < 30 && base<<n < limit {
		d = base << n
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// resumeCurves is the key exchange of a dial that offers a session ticket.
//
// A full handshake uses crypto/tls's default, the post-quantum hybrid
// X25519MLKEM768. A resumed one mixes the ticket's pre-shared key, which
// came from such a full handshake, into its secrets, so its traffic is as
// safe from a future quantum computer as that handshake's was; its own
// key exchange adds forward secrecy, for which P-256 (assembly here, the
// fastest curve crypto/tls has) does. The hybrid's keys cost a client
// about 0.3 ms and a server 0.15 ms more per handshake: a third of a
// reconnect storm's CPU.
var resumeCurves = []tls.CurveID{tls.CurveP256}

// dial opens the WebSocket to url. With a session ticket for the relay it
// offers the ticket and the resumption key exchange alone; should the
// relay decline the ticket (it lost its ticket keys, or the ticket is too
// old), the handshake was a full one on a classical key exchange, so it is
// dropped and made again with the default, post-quantum one.
func (s *Session) dial(ctx context.Context, dialer *websocket.Dialer, rawURL string) (*websocket.Conn, error) {
	// crypto/tls keys its session cache by ServerName: both dials name the
	// host the same way, whatever gorilla would have filled in.
	full := s.TLS.Clone()
	if u, err := url.Parse(rawURL); err == nil {
		full.ServerName = u.Hostname()
	}
	d := *dialer
	d.TLSClientConfig = full
	resuming := false
	if cache := full.ClientSessionCache; cache != nil {
		if cs, ok := cache.Get(full.ServerName); ok && cs != nil {
			resume := full.Clone()
			resume.CurvePreferences = resumeCurves
			d.TLSClientConfig, resuming = resume, true
		}
	}
	ws, _, err := d.DialContext(ctx, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if tc, ok := ws.UnderlyingConn().(*tls.Conn); ok {
		cs := tc.ConnectionState()
		if resuming && !cs.DidResume {
			ws.Close()
			s.Logger.Info("relay declined the session ticket; dialing again with the post-quantum key exchange", "relay", rawURL)
			d.TLSClientConfig = full
			if ws, _, err = d.DialContext(ctx, rawURL, nil); err != nil {
				return nil, err
			}
			if tc, ok := ws.UnderlyingConn().(*tls.Conn); ok {
				cs = tc.ConnectionState()
			}
		}
		if s.OnTLS != nil {
			s.OnTLS(cs)
		}
	}
	return ws, nil
}

// session runs one relay connection. established is true once Welcome
// arrived.
func (s *Session) session(ctx context.Context, dialer *websocket.Dialer, url string) (established bool, err error) {
	ws, err := s.dial(ctx, dialer, url)
	if err != nil {
		return false, err
	}
	live, err := s.Applier.Live()
	if err != nil {
		s.Logger.Warn("reading live hash", "err", err)
	}
	// Until Welcome says otherwise, the relay's silence is bounded by the
	// handshake timeout.
	conn := wire.NewConn(ws, wire.MaxRelayMessage, wire.AcceptTimeout)
	defer conn.CloseNow()
	hello := &wire.Hello{Protocol: wire.Protocol, AgentVersion: s.Version, AppliedHash: live, State: "idle",
		Capabilities: []string{wire.CapHeartbeatPong}}
	if s.Kept != nil {
		hello.Capabilities = append(hello.Capabilities, wire.CapBundleDelta)
	}
	if err := conn.Write(hello, nil); err != nil {
		return false, err
	}
	m, _, err := conn.Read(ctx)
	if err != nil {
		return false, err
	}
	welcome, ok := m.(*wire.Welcome)
	if !ok {
		_ = conn.Close(wire.CloseMalformed, "expected welcome")
		return false, fmt.Errorf("relay sent %s before welcome", m.Type())
	}
	if welcome.Protocol != wire.Protocol {
		_ = conn.Close(wire.CloseProtocolMismatch, wire.ProtocolMismatchReason(wire.Protocol, welcome.Protocol))
		return false, fmt.Errorf("relay speaks protocol %d, we speak %d", welcome.Protocol, wire.Protocol)
	}
	interval := time.Duration(welcome.HeartbeatIntervalMs) * time.Millisecond
	if interval < 100*time.Millisecond {
		interval = 15 * time.Second
	}
	// Re-wrap the read deadline: the relay answers our pings every interval.
	conn = wire.NewConn(ws, wire.MaxRelayMessage, 3*interval)
	if s.Watchdog != nil {
		conn.Watch(s.Watchdog)
	}
	defer conn.CloseNow()
	s.Logger.Info("connected to relay", "relay", url, "desired", short(welcome.DesiredHash), "applied", short(live))

	s.readAt.Store(s.Clock.Now().UnixNano())
	s.appliedAt.Store(math.MinInt64)
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	if s.OnConnect != nil {
		s.OnConnect()
	}
	defer func() {
		s.mu.Lock()
		s.conn = nil
		s.mu.Unlock()
	}()
	s.sendPending()

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	// A relay that answers heartbeats with pongs needs no pings to prove
	// it alive.
	ping := !slices.Contains(welcome.Capabilities, wire.CapHeartbeatPong)
	wg.Go(func() { s.heartbeat(sctx, conn, interval, ping) })

	// One watch on sctx for the whole session rather than one per Read
	// (a Read with a context that can end registers its own): ending sctx
	// closes the connection, which ends the Read.
	defer context.AfterFunc(sctx, conn.CloseNow)()
	reads := context.WithoutCancel(sctx)
	for {
		m, payload, err := conn.Read(reads)
		if err != nil {
			if ctxErr := sctx.Err(); ctxErr != nil {
				return true, ctxErr
			}
			return true, err
		}
		s.readAt.Store(s.Clock.Now().UnixNano())
		switch m := m.(type) {
		case *wire.Bundle:
			s.onBundle(m, payload)
		case *wire.BundleDelta:
			s.onDelta(conn, m, payload)
		case *wire.Welcome:
		default:
			_ = conn.Close(wire.CloseMalformed, "unexpected "+m.Type().String())
			return true, fmt.Errorf("relay sent unexpected %s", m.Type())
		}
	}
}

// onBundle decompresses (bounded), decodes and verifies a bundle and hands
// it to the Loop; a bundle that fails any check is nacked as failed.
func (s *Session) onBundle(m *wire.Bundle, payload []byte) {
	fail := func(err error) {
		s.Logger.Warn("refusing bundle", "hash", short(m.Hash), "err", err)
		s.Report(Result{State: Failed, Hash: m.Hash, Reason: err.Error()})
	}
	if m.Encoding != wire.EncodingGzip {
		fail(fmt.Errorf("unknown bundle encoding %q", m.Encoding))
		return
	}
	data, err := wire.Decompress(payload, s.sizeLimit(m.Size))
	if err != nil {
		fail(err)
		return
	}
	b, err := nginx.UnmarshalBundle(data, m.Hash, s.Limits)
	if err != nil {
		fail(err)
		return
	}
	s.Logger.Info("bundle received", "hash", short(m.Hash), "files", len(b.Files))
	s.Loop.Submit(b)
}

// onDelta builds a bundle from a delta and a bundle the agent kept and
// hands it to the Loop. A delta that does not yield exactly the bundle it
// names (base gone, hash mismatch, bad encoding) is not nacked: the agent
// asks for the whole bundle instead (NeedBundle).
func (s *Session) onDelta(conn *wire.Conn, m *wire.BundleDelta, payload []byte) {
	b, err := s.applyDelta(m, payload)
	if s.OnDelta != nil {
		s.OnDelta(err == nil)
	}
	if err != nil {
		s.Logger.Info("cannot apply delta; asking for the whole bundle", "hash", short(m.Hash), "base", short(m.Base), "err", err)
		reason := err.Error()
		if len(reason) > 256 {
			reason = reason[:256]
		}
		if err := conn.Write(&wire.NeedBundle{Hash: m.Hash, Reason: reason}, nil); err != nil {
			conn.CloseNow()
		}
		return
	}
	s.Logger.Info("bundle received", "hash", short(m.Hash), "files", len(b.Files), "delta", short(m.Base))
	s.Loop.Submit(b)
}

func (s *Session) applyDelta(m *wire.BundleDelta, payload []byte) (*nginx.Bundle, error) {
	var base *nginx.Bundle
	if s.Kept != nil {
		base = s.Kept.Kept(m.Base)
	}
	if base == nil {
		return nil, fmt.Errorf("base bundle %s not kept", short(m.Base))
	}
	data, err := wire.DecodePayload(m.Encoding, payload, s.sizeLimit(m.Size))
	if err != nil {
		return nil, err
	}
	return nginx.ApplyDelta(base, data, m.Hash, s.Limits)
}

// sizeLimit is what a payload that says it decodes to size bytes may
// decode to: size, capped by MaxBundleSize.
func (s *Session) sizeLimit(size int64) int {
	if size >= 0 && size < int64(s.MaxBundleSize) {
		return int(size)
	}
	return s.MaxBundleSize
}

// heartbeatGrid aligns heartbeats: each is sent on a multiple of it of
// the wall clock. A relay's agents' heartbeats then arrive a few hundred
// at a time, and one wake-up of the relay reads them all, where spread
// evenly each woke it alone: at 50,000 agents those wake-ups were about
// 40 % of the relays' CPU while heartbeating. Agents' clocks agree to well
// within it wherever NTP runs.
const heartbeatGrid = 250 * time.Millisecond

// untilBeat is how long to wait for the next heartbeat, an interval from
// now: rounded down to heartbeatGrid when the interval is 8 of it or more
// (so that two heartbeats stay more than 1.5 intervals apart, the gap the
// relay answers with a pong).
func (s *Session) untilBeat(interval time.Duration) time.Duration {
	if interval < 8*heartbeatGrid {
		return interval
	}
	now := s.Clock.Now()
	return now.Add(interval).Truncate(heartbeatGrid).Sub(now)
}

// heartbeat sends a Heartbeat every interval, and a ping after it when
// ping is set; the relay's pongs keep the session's read deadline.
//
// A beat is skipped when, within the last half interval, the session both
// read a message from the relay and wrote an applied Result: the Result
// told the relay what the Heartbeat would (the live hash, nginx serving
// it) and the read proved the relay alive. In a push every agent does
// both, so a fleet sends half as many heartbeats while a push is under
// way. Neither side's deadline comes nearer: the relay hears from the
// agent at least every 2 intervals (its deadline is 3), and the relay's
// pong for a heartbeat at the latest 2 intervals after the skip comes at
// most 2.5 intervals after the read (the agent's deadline is 3).
func (s *Session) heartbeat(ctx context.Context, conn *wire.Conn, interval time.Duration, ping bool) {
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.Clock.After(s.untilBeat(interval)):
		}
		if since := s.Clock.Now().UnixNano() - interval.Nanoseconds()/2; s.readAt.Load() >= since && s.appliedAt.Load() >= since {
			continue
		}
		seq++
		s.sendMu.Lock()
		live, _ := s.Applier.Live()
		hb := &wire.Heartbeat{AppliedHash: live, Seq: seq}
		if s.NginxUp != nil {
			hb.NginxUp = s.NginxUp()
		}
		err := conn.Write(hb, nil)
		s.sendMu.Unlock()
		if err != nil {
			conn.CloseNow()
			return
		}
		if !ping {
			continue
		}
		if err := conn.Ping(); err != nil {
			conn.CloseNow()
			return
		}
	}
}
