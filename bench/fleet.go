package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/wire"
)

// fleet is the simulated agents of one agent process (an `nxmesh
// bench-agents` child of the bench, see swarm): each the real agent.Session
// (TLS, WebSocket, wire, reconnects with backoff, heartbeats, results) and
// the real agent.Loop, with an in-memory apply instead of nginx. NOT an
// nginx: the bench measures the control plane, and ten thousand nginx do
// not fit on one machine.
type fleet struct {
	agents []*sim

	// Counted at the agents, over the whole run.
	connected  atomic.Int64 // sessions established now
	heartbeats atomic.Int64 // heartbeats sent
	handshakes atomic.Int64 // TLS handshakes completed
	resumed    atomic.Int64 // ... of which resumed a TLS session
	deltas     atomic.Int64 // bundles built from a delta
	wholeAsked atomic.Int64 // deltas that did not apply (NeedBundle sent)
	// resumption says whether agents offer their TLS session tickets; the
	// tickets are always kept, so that a storm can switch it on.
	resumption atomic.Bool

	// dog bounds every agent's relay session: one goroutine, not a socket
	// deadline per frame, as in the relays (wire.Watchdog). It ticks every
	// dogTick: a tick reads every session's stamps.
	dog *wire.Watchdog

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// dogTick is how often the agents' watchdog checks them: an agent's
// session times out after 3 heartbeat intervals (45 s by default), at
// most two ticks late.
const dogTick = time.Second

// sim is one simulated agent.
type sim struct {
	id    string
	relay int // index into the cluster's relays
	f     *fleet
	sess  *agent.Session
	loop  *agent.Loop

	mu        sync.Mutex // guards the fields below
	live      string     // hash of the last applied bundle
	reports   []report   // the latest results, oldest first, at most maxReports
	conn      *trackedConn
	up        bool      // a session is established on conn
	connects  int       // sessions established, ever
	connectAt time.Time // when the last one was
}

// report is one result an agent reported: the hash, when Report was called
// with it (wall clock, Unix nanoseconds: agent processes and the bench
// share the machine's clock), and whether it said applied.
type report struct {
	Hash    string `json:"h"`
	At      int64  `json:"t"`
	Applied bool   `json:"a,omitempty"`
}

// maxReports bounds the results each agent remembers; a push round looks
// only at the results since its commit.
const maxReports = 8

// Live implements agent.LiveHasher: the hash in Hello and in heartbeats.
func (s *sim) Live() (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.live, nil
}

// onResult records an apply's result and hands it to the session, as the
// real agent's Loop does with Session.Report. The ack time is taken here,
// when Report is called.
func (s *sim) onResult(r agent.Result) {
	now := time.Now()
	s.mu.Lock()
	if r.State == agent.Applied {
		s.live = r.Hash
	}
	if len(s.reports) == maxReports {
		s.reports = append(s.reports[:0], s.reports[1:]...)
	}
	s.reports = append(s.reports, report{Hash: r.Hash, At: now.UnixNano(), Applied: r.State == agent.Applied})
	s.mu.Unlock()
	s.sess.Report(r)
}

// memApply is the simulated agent's apply: it accepts every bundle at once.
// It is generic only so that this package need not name nginx.Bundle (the
// bench may import wire, pki and agent; DESIGN.md): agent.NewLoop's
// ApplyFunc instantiates it with *nginx.Bundle.
func memApply[B any](_ context.Context, b B) agent.Result {
	return agent.Result{State: agent.Applied, Hash: bundleHash(b)}
}

// bundleHash is the Hash field of a *nginx.Bundle, read by reflection for
// the reason memApply gives. The session has already decompressed the
// bundle and checked its files against this hash.
func bundleHash(b any) string {
	v := reflect.ValueOf(b)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return ""
	}
	h := v.FieldByName("Hash")
	if h.Kind() != reflect.String {
		return ""
	}
	return h.String()
}

// connected is Session.OnConnect: the session on the connection dialed
// last is established.
func (s *sim) connected() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connects++
	s.connectAt = now
	if !s.up {
		s.up = true
		s.f.connected.Add(1)
	}
}

// closed is called once when a connection of this agent closes.
func (s *sim) closed(c *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == c && s.up {
		s.up = false
		s.f.connected.Add(-1)
	}
}

// state is a snapshot of the agent for the scenarios, with the results it
// reported at or after since (Unix nanoseconds).
func (s *sim) state(since int64) agentState {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := agentState{Up: s.up, Connects: s.connects, Live: s.live}
	if !s.connectAt.IsZero() {
		st.ConnectAt = s.connectAt.UnixNano()
	}
	for _, r := range s.reports {
		if r.At >= since {
			st.Reports = append(st.Reports, r)
		}
	}
	return st
}

// session says whether the agent has a session now, and how many it has
// had.
func (s *sim) session() (up bool, connects int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up, s.connects
}

// reportedSince says whether the agent reported any result for a hash
// other than prev at or after since (Unix nanoseconds).
func (s *sim) reportedSince(prev string, since int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.reports {
		if r.Hash != prev && r.At >= since {
			return true
		}
	}
	return false
}

// trackedConn is an agent's TCP connection that tells its agent when it
// closes: agent.Session has no disconnect hook, and every session ends by
// closing its connection.
type trackedConn struct {
	net.Conn
	once    sync.Once
	onClose func(*trackedConn)
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.onClose(c) })
	return c.Conn.Close()
}

// sourceAddr is the loopback source address of agent i (of the run):
// 127.0.0.2 and up, so that each address needs at most maxAgentsPerSource
// ephemeral ports.
func sourceAddr(i, addrs int) net.IP {
	return net.IPv4(127, 0, 0, byte(2+i%addrs))
}

// bindAddressNoPort makes a socket's bind to its source address leave the
// port to connect, which picks one unique for the destination, rather than
// search the address's whole range for a port no other socket holds: at
// tens of thousands of agents that search took most of the agent
// processes' CPU. Without the option (a kernel before 4.2) the bind
// searches as before.
func bindAddressNoPort(_, _ string, c syscall.RawConn) error {
	return c.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	})
}

// relayOf is the index of the relay agent i (of the run) connects to.
func relayOf(i, relays int) int { return i % relays }

// switchCache is a TLS client session cache that always keeps tickets and
// offers them only while the fleet's resumption is on.
type switchCache struct {
	on    *atomic.Bool
	cache tls.ClientSessionCache
}

func (c switchCache) Get(key string) (*tls.ClientSessionState, bool) {
	if !c.on.Load() {
		return nil, false
	}
	return c.cache.Get(key)
}

func (c switchCache) Put(key string, cs *tls.ClientSessionState) { c.cache.Put(key, cs) }

// newFleet makes one simulated agent per identity; ids[k] is agent
// first+k of the run, which picks its relay (relayOf) and its source
// address. start starts them.
func newFleet(ids []identity, first int, relayURLs []string, roots *x509.CertPool, addrs int, version string) (*fleet, error) {
	f := &fleet{agents: make([]*sim, len(ids)), dog: wire.NewWatchdog(dogTick)}
	for i, id := range ids {
		s, err := f.newSim(first+i, id, relayURLs, roots, addrs, version)
		if err != nil {
			return nil, err
		}
		f.agents[i] = s
	}
	return f, nil
}

// start starts every agent, at most rate per second (0: all at once). The
// agents run until stop.
func (f *fleet) start(ctx context.Context, rate int) {
	ctx, f.cancel = context.WithCancel(ctx)
	f.wg.Go(func() { f.dog.Run(ctx) })
	f.wg.Go(func() {
		var tick *time.Ticker
		if rate > 0 {
			// Start agents in small groups, so that the rate holds without a
			// timer per agent.
			tick = time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
		}
		per := max(rate/100, 1)
		for i, s := range f.agents {
			if tick != nil && i > 0 && i%per == 0 {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
			f.wg.Go(func() { _ = s.loop.Run(ctx) })
			f.wg.Go(func() { _ = s.sess.Run(ctx) })
		}
	})
}

func (f *fleet) newSim(i int, id identity, relayURLs []string, roots *x509.CertPool, addrs int, version string) (*sim, error) {
	src, err := pki.NewSource(id.cert)
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", id.id, err)
	}
	cfg, err := pki.ClientTLSConfig(src, pki.Peer{TrustDomain: "nxmesh.local", Roots: roots, Roles: []pki.Role{pki.RoleRelay, pki.RoleHub}})
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", id.id, err)
	}
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		f.handshakes.Add(1)
		if cs.DidResume {
			f.resumed.Add(1)
		}
		return nil
	}
	cfg.ClientSessionCache = switchCache{on: &f.resumption, cache: tls.NewLRUClientSessionCache(1)}

	s := &sim{id: id.id, relay: relayOf(i, len(relayURLs)), f: f}
	dialer := &net.Dialer{
		LocalAddr: &net.TCPAddr{IP: sourceAddr(i, addrs)},
		Timeout:   10 * time.Second,
		Control:   bindAddressNoPort,
	}
	s.loop = agent.NewLoop(memApply, nil, s.onResult)
	// Like a real agent, which builds a changed bundle from its live
	// release and a delta, a simulated one builds it from the last bundle
	// it applied.
	s.loop.KeepApplied()
	s.sess = &agent.Session{
		Relays:  []string{relayURLs[s.relay]},
		TLS:     cfg,
		Applier: s,
		Loop:    s.loop,
		Kept:    s.loop,
		// Counted where the session reads it: once per heartbeat.
		NginxUp: func() bool { f.heartbeats.Add(1); return true },
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := &trackedConn{Conn: c, onClose: s.closed}
			s.mu.Lock()
			s.conn = tc
			s.mu.Unlock()
			return tc, nil
		},
		OnConnect: s.connected,
		OnDelta: func(applied bool) {
			if applied {
				f.deltas.Add(1)
			} else {
				f.wholeAsked.Add(1)
			}
		},
		Watchdog: f.dog,
		Version:  version,
	}
	return s, nil
}

// stop ends every agent session and waits for them.
func (f *fleet) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.wg.Wait()
}

// raiseFileLimit raises RLIMIT_NOFILE towards want, the hard limit too
// when allowed (root, unless a sandbox refuses); daemons started
// afterwards inherit it. It returns the soft limit in force and why it is
// below want, if it is.
func raiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("read the open files limit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	up := syscall.Rlimit{Cur: want, Max: max(lim.Max, want)}
	err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up)
	if err == nil {
		return want, nil
	}
	// Not allowed past the hard limit: take all of it.
	up = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
	if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up); err2 != nil {
		return lim.Cur, fmt.Errorf("raise the open files limit from %d: %w", lim.Cur, err2)
	}
	return lim.Max, fmt.Errorf("raise the open files limit to %d (hard limit %d): %w", want, lim.Max, err)
}
