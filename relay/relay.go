// Package relay is the regional fan-out daemon: it holds the mTLS WebSocket
// sessions of many agents, keeps one upstream session to some hub (failing
// over between hubs), caches bundles by hash on disk so agents get their last
// desired bundle while every hub is down, fetches each bundle once and writes
// the same prepared frame to every agent that needs it, and batches agent
// heartbeats, results and session changes upstream. Bundles are opaque bytes
// to it. It imports only wire and pki of NxMesh: never hub, hub/store,
// schema, nginx or pki/ca.
package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/wire"
)

// Clock is the relay's time source; tests may replace it.
type Clock interface {
	Now() time.Time
	// After behaves like time.After.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures a relay Server.
type Config struct {
	// Listen is the address agents connect to, e.g. ":7443". Ignored when
	// Listener is set.
	Listen string
	// Listener, when set, is used instead of listening on Listen (tests).
	// It must be a plain TCP listener: the relay adds TLS.
	Listener net.Listener
	// Mounted means the relay has no listener of its own: the caller serves
	// Handler() behind its own mTLS listener. The hub's embedded relay is
	// mounted on the hub's agent listener.
	Mounted bool
	// Hubs are the wss:// URLs of the hubs' /v1/relay endpoints. Empty
	// means no upstream (a relay embedded in a hub is fed by the hub).
	Hubs []string
	// StateDir holds the bundle cache and the desired map (cold start).
	StateDir string

	// Source is the relay's certificate (role relay), for both directions.
	Source *pki.Source
	// TrustDomain and Roots are the installation's.
	TrustDomain string
	Roots       *x509.CertPool
	// IsRevoked, when set, is asked about every agent certificate's serial
	// on each handshake (pki.Peer.IsRevoked).
	IsRevoked func(serial string) (bool, error)

	// HeartbeatInterval is what Welcome tells agents (default 15 s). An
	// agent silent for 3 intervals (no heartbeat, no ping) is disconnected.
	HeartbeatInterval time.Duration
	// SendQueue is the per-agent queue length in frames (default 8). A full
	// queue disconnects the agent with CloseSlowConsumer.
	SendQueue int
	// MaxHandshakes bounds the connections in their TLS handshake at once
	// (default 512); more wait, accepted, for their turn. See limit.go.
	MaxHandshakes int
	// FlushInterval is how often heartbeats, results and session deltas go
	// upstream (default 1 s); a large batch goes at once.
	FlushInterval time.Duration
	// FlushLinger is the least time between two flushes that a result, a
	// session change or a full batch asks for (default 10 ms): the first
	// goes at once, what follows waits out the rest of it and shares one
	// write, so that a push's results go up hundreds at a time.
	FlushLinger time.Duration
	// MinBackoff and MaxBackoff bound the upstream reconnect delay
	// (defaults 500 ms and 30 s); each wait is drawn with full jitter.
	MinBackoff, MaxBackoff time.Duration
	// Version is reported in RelayHello.
	Version string
	// FanOut, when set, is told that a fan-out may begin: with the number
	// of agents a Desired message from the hub gives a new bundle, before
	// their frames are queued, and with -1 when the hub sends a bundle or
	// a delta, which comes before the Desired message that assigns it
	// (and before decoding that message allocates for every agent). It
	// must not block. `relay run` uses it to let garbage grow at a
	// burst's pace before a push allocates, not a quarter second into it.
	FanOut func(agents int)
	// Clock defaults to the wall clock.
	Clock Clock
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.Listen == "" && c.Listener == nil && !c.Mounted {
		return errors.New("relay: Listen or Listener is required")
	}
	if c.StateDir == "" {
		return errors.New("relay: StateDir is required")
	}
	if c.Source == nil {
		return errors.New("relay: Source (the relay certificate) is required")
	}
	if err := pki.ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if c.Roots == nil {
		return errors.New("relay: Roots are required")
	}
	for _, h := range c.Hubs {
		if len(h) < 6 || h[:6] != "wss://" {
			return fmt.Errorf("relay: hub URL %q must start with wss://", h)
		}
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 15 * time.Second
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 8
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 512
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = time.Second
	}
	if c.FlushLinger <= 0 {
		c.FlushLinger = 10 * time.Millisecond
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(30*time.Second, c.MinBackoff)
	}
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Stats are counters for tests and metrics.
type Stats struct {
	// AgentsConnected is the number of live agent sessions.
	AgentsConnected int
	// SlowDisconnects counts agents disconnected because their send queue
	// was full (CloseSlowConsumer).
	SlowDisconnects int64
	// BundlesCached is the number of bundles held in memory.
	BundlesCached int
	// UpstreamConnected is true while a hub session is up.
	UpstreamConnected bool
	// FetchesSent counts FetchBundle messages sent upstream.
	FetchesSent int64
	// BundlesSent and DeltasSent count bundles queued to agents, whole
	// and as deltas.
	BundlesSent, DeltasSent int64
	// ResultsReceived counts agents' Results (applies, rejections, ...).
	ResultsReceived int64
	// HeartbeatsReceived counts agents' Heartbeats.
	HeartbeatsReceived int64
	// Accepted counts connections the relay's own listener accepted (none
	// when the relay is mounted on another server).
	Accepted int64
	// Expired counts accepted connections closed unserved because they
	// waited for a handshake slot longer than their client would.
	Expired int64
	// SessionsStarted counts agent sessions registered (a Hello taken).
	// In a reconnect storm every connection is accepted within the first
	// second and waits for a handshake slot; the sessions go on starting
	// for seconds after the accepts have stopped.
	SessionsStarted int64
}

// Server is a relay. Create it with New, serve with Run.
type Server struct {
	cfg   Config
	log   *slog.Logger
	cache *cache

	// wg owns every goroutine the server starts: handlers, writers,
	// the upstream loop. Run waits for it.
	wg sync.WaitGroup

	mu sync.Mutex // guards the fields below
	// stopping is set once Run's context ended; no new goroutines start.
	stopping bool
	// agents are the live sessions by agent id.
	agents map[string]*agentConn
	// desired is the bundle hash each agent should run, from the hub
	// (persisted in the cache directory by persistDesired).
	desired map[string]string
	// wanted counts the agents that want each hash in desired.
	wanted map[string]int
	// hashes holds one copy of each wanted hash (see internLocked).
	hashes map[string]string
	// desiredChanged is when desired last changed; desiredDirtySince when
	// it first changed after it was last written, zero when it was not.
	desiredChanged, desiredDirtySince time.Time
	// desiredBuf is the encoded desired map, kept for the next write;
	// only the goroutine that persists it (persistDesired) touches it.
	desiredBuf []byte
	// revoked are agent ids the hub revoked; they are refused.
	revoked map[string]string
	// lastResult is each agent's latest Result (kept across its sessions
	// for the Snapshot).
	lastResult map[string]*wire.Result
	// fetching are hashes with a FetchBundle sent or queued and no answer.
	fetching map[string]bool
	// up is the pending upstream traffic; see upstream.go.
	up pending
	// upKick wakes the upstream writer early (cap 1, never blocks).
	upKick chan struct{}
	// upConnected is true while a hub session is established.
	upConnected bool

	slow        atomic.Int64
	deltasSent  atomic.Int64
	bundlesSent atomic.Int64
	results     atomic.Int64
	heartbeats  atomic.Int64
	fetches     atomic.Int64
	accepted    atomic.Int64
	expired     atomic.Int64
	started     atomic.Int64

	// dog bounds agent sessions' silence and writes (wire.Watchdog): a
	// socket deadline per frame was a twentieth of a push's CPU.
	dog *wire.Watchdog

	// sessions is the context of every agent session; Run cancels it
	// when it stops.
	sessions    context.Context
	endSessions context.CancelFunc
}

// New returns a relay for cfg; it loads the disk cache (desired map and
// bundles) so that it can serve agents before any hub answers.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := openCache(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger,
		cache:      c,
		agents:     map[string]*agentConn{},
		revoked:    map[string]string{},
		lastResult: map[string]*wire.Result{},
		fetching:   map[string]bool{},
		upKick:     make(chan struct{}, 1),
		// Sessions time out within a quarter interval of their 3.
		dog: wire.NewWatchdog(cfg.HeartbeatInterval / 8),
	}
	s.sessions, s.endSessions = context.WithCancel(context.Background())
	desired, err := c.loadDesired()
	if err != nil {
		return nil, err
	}
	s.desired, s.wanted, s.hashes = map[string]string{}, map[string]int{}, map[string]string{}
	for id, h := range desired {
		s.setDesiredLocked(id, h)
	}
	s.up.reset()
	return s, nil
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		AgentsConnected:    len(s.agents),
		SlowDisconnects:    s.slow.Load(),
		BundlesCached:      s.cache.len(),
		UpstreamConnected:  s.upConnected,
		FetchesSent:        s.fetches.Load(),
		DeltasSent:         s.deltasSent.Load(),
		BundlesSent:        s.bundlesSent.Load(),
		ResultsReceived:    s.results.Load(),
		HeartbeatsReceived: s.heartbeats.Load(),
		Accepted:           s.accepted.Load(),
		Expired:            s.expired.Load(),
		SessionsStarted:    s.started.Load(),
	}
}

// Handler serves /v1/agent. The relay's own listener uses it; a hub mounts
// it on its listener to accept agents directly (its TLS config must then
// request and verify client certificates, accepting role agent).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agent", s.serveAgent)
	return mux
}

// TLSConfig returns the server TLS config of the agent listener: TLS 1.3,
// the relay certificate, client certificates of role agent only.
func (s *Server) TLSConfig() (*tls.Config, error) {
	return pki.ServerTLSConfig(s.cfg.Source, pki.Peer{
		TrustDomain: s.cfg.TrustDomain,
		Roots:       s.cfg.Roots,
		Roles:       []pki.Role{pki.RoleAgent},
		IsRevoked:   s.cfg.IsRevoked,
	})
}

// Run serves agents and keeps the upstream session until ctx ends, then
// closes every session and returns once all of the relay's goroutines
// have ended.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Mounted {
		return s.runMounted(ctx)
	}
	tlsCfg, err := s.TLSConfig()
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if err := s.useTicketKeys(tlsCfg); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	ln := s.cfg.Listener
	if ln == nil {
		ln, err = net.Listen("tcp", s.cfg.Listen)
		if err != nil {
			return fmt.Errorf("relay: listen: %w", err)
		}
	}
	lim, connState := s.LimitHandshakes(ln)
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         tlsCfg,
		ReadHeaderTimeout: wire.AcceptTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState:         connState,
	}
	s.log.Info("relay listening", "addr", ln.Addr().String(), "hubs", len(s.cfg.Hubs))
	serveErr := make(chan error, 1)
	s.wg.Go(func() { serveErr <- srv.ServeTLS(lim, "", "") })
	if len(s.cfg.Hubs) > 0 {
		s.wg.Go(func() { s.runUpstream(ctx) })
	}
	s.wg.Go(func() { s.rotateTicketKeys(ctx, tlsCfg) })
	s.wg.Go(func() { s.persistDesired(ctx) })
	s.wg.Go(func() { s.dog.Run(ctx) })
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-serveErr:
	}
	conns := s.stop()
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = srv.Shutdown(shutCtx) // hijacked WebSockets are closed below
	cancel()
	for _, a := range conns {
		a.conn.CloseNow()
	}
	s.wg.Wait()
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) {
		return fmt.Errorf("relay: serve: %w", runErr)
	}
	return nil
}

// LimitHandshakes wraps ln, a listener of plain TCP connections, so that
// at most MaxHandshakes of them are between accept and the end of their
// TLS handshake at once; the rest wait, accepted, for their turn
// (docs/relay.md, Reconnect storms). The relay's Stats count them. The
// http.Server that serves the wrapped listener (through tls.NewListener,
// or ServeTLS) must take connState as its ConnState: it gives the slots
// back. Run limits its own listener; a caller that mounts Handler limits
// the listener it serves it on.
func (s *Server) LimitHandshakes(ln net.Listener) (lim net.Listener, connState func(net.Conn, http.ConnState)) {
	l := newHandshakeLimiter(ln, s.cfg.MaxHandshakes, s.cfg.Clock.Now, &s.accepted, &s.expired)
	return l, l.connState
}

// runMounted is Run for a relay whose Handler the caller serves: only the
// upstream session runs here.
func (s *Server) runMounted(ctx context.Context) error {
	if len(s.cfg.Hubs) > 0 {
		s.wg.Go(func() { s.runUpstream(ctx) })
	}
	s.wg.Go(func() { s.persistDesired(ctx) })
	s.wg.Go(func() { s.dog.Run(ctx) })
	<-ctx.Done()
	for _, a := range s.stop() {
		a.conn.CloseNow()
	}
	s.wg.Wait()
	return nil
}

// stop refuses new sessions and returns the live ones, for Run to close.
func (s *Server) stop() []*agentConn {
	s.endSessions()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopping = true
	conns := make([]*agentConn, 0, len(s.agents))
	for _, a := range s.agents {
		conns = append(conns, a)
	}
	return conns
}

// goTracked starts f on the server's WaitGroup unless the server stops.
// Called with s.mu held.
func (s *Server) goTrackedLocked(f func()) bool {
	if s.stopping {
		return false
	}
	s.wg.Go(f)
	return true
}

// Optional features this relay lists: to agents in Welcome, to hubs in
// RelayHello.
var (
	agentCapabilities = []string{wire.CapBundleDelta, wire.CapHeartbeatPong}
	hubCapabilities   = []string{wire.CapBundleDelta}
)
