package relay_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/pki/ca"
	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/wire"
)

const td = "relay.test"

// memStore is a TEST DOUBLE for the hub's SQL store (hub/store), copied from
// pki/ca/memstore_test.go: just enough of ca.Storage under one mutex to run
// a real CA in tests. Not for production.
type memStore struct {
	mu      sync.Mutex // guards the fields below
	ca      []byte
	tokens  map[string]int
	revoked map[string]bool
}

func newMemStore() *memStore {
	return &memStore{tokens: map[string]int{}, revoked: map[string]bool{}}
}

func (m *memStore) GetCA(context.Context) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ca == nil {
		return nil, ca.ErrNotFound
	}
	return append([]byte(nil), m.ca...), nil
}

func (m *memStore) CreateCA(_ context.Context, sealed []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ca != nil {
		return ca.ErrExists
	}
	m.ca = append([]byte(nil), sealed...)
	return nil
}

func (m *memStore) CreateToken(_ context.Context, t ca.TokenRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tokens[t.ID] = t.Uses
	return nil
}

func (m *memStore) ConsumeToken(_ context.Context, jti string) (ca.TokenUse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.tokens[jti]
	switch {
	case !ok:
		return ca.TokenUnknown, nil
	case n <= 0:
		return ca.TokenUsedUp, nil
	}
	m.tokens[jti] = n - 1
	return ca.TokenConsumed, nil
}

func (m *memStore) RecordCertificate(context.Context, ca.CertRecord) error { return nil }

func (m *memStore) Revoke(_ context.Context, r ca.Revocation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.revoked[r.Serial] = true
	return nil
}

func (m *memStore) IsRevoked(_ context.Context, serial string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.revoked[serial], nil
}

func quiet() *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func openCA(t testing.TB, kek byte) *ca.CA {
	t.Helper()
	key := make([]byte, 32)
	for i := range key {
		key[i] = kek
	}
	c, err := ca.Open(context.Background(), ca.Config{TrustDomain: td, Storage: newMemStore(), KEK: key, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// enroll issues a certificate for req through a real enrollment token.
func enroll(t testing.TB, c *ca.CA, req ca.TokenRequest) (*pki.Source, *ca.Issued) {
	t.Helper()
	ctx := context.Background()
	tok, err := c.NewEnrollmentToken(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.GenerateKey()
	csr, _ := pki.NewCSR(key)
	iss, err := c.Enroll(ctx, tok, csr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.NewCertificate(key, iss.Chain)
	if err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(cert)
	if err != nil {
		t.Fatal(err)
	}
	return src, iss
}

// agentTLS returns an agent's client TLS config (peer role relay or hub).
func agentTLS(t testing.TB, c *ca.CA) (*tls.Config, string) {
	t.Helper()
	src, iss := enroll(t, c, ca.TokenRequest{Workspace: "ws1", Role: pki.RoleAgent})
	return clientTLS(t, c, src, pki.RoleRelay, pki.RoleHub), iss.Identity.ID
}

func clientTLS(t testing.TB, c *ca.CA, src *pki.Source, roles ...pki.Role) *tls.Config {
	t.Helper()
	cfg, err := pki.ClientTLSConfig(src, pki.Peer{TrustDomain: td, Roots: c.Roots(), Roles: roles})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// eventually polls cond until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

// ---- test hub ----

// testHub is a TEST DOUBLE standing in for the hub's /v1/relay endpoint
// until the real one (package hub) lands. It speaks the hub side of wire
// over real mTLS WebSockets: it accepts RelayHello and Snapshot, records
// what relays send, sends Desired (all of it after every Snapshot, then
// changes) and answers FetchBundle with BundleData.
type testHub struct {
	t   testing.TB
	url string
	ln  net.Listener
	srv *http.Server
	wg  sync.WaitGroup

	mu         sync.Mutex // guards the fields below
	bundles    map[string]hubBundle
	desired    map[string]string
	fetches    map[string]int
	results    []wire.AgentResult
	resultMsgs int // Results messages received
	snapshots  []wire.Snapshot
	deltas     []wire.SessionDelta
	beats      int
	conns      map[*wire.Conn]bool
}

type hubBundle struct {
	size    int64
	payload []byte
}

func startTestHub(t testing.TB, c *ca.CA, id string) *testHub {
	t.Helper()
	cert, err := c.IssueHub(context.Background(), id, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	src, _ := pki.NewSource(cert)
	tlsCfg, err := pki.ServerTLSConfig(src, pki.Peer{TrustDomain: td, Roots: c.Roots(), Roles: []pki.Role{pki.RoleRelay}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &testHub{t: t, ln: ln, url: "wss://" + ln.Addr().String() + "/v1/relay",
		bundles: map[string]hubBundle{}, desired: map[string]string{}, fetches: map[string]int{}, conns: map[*wire.Conn]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/relay", h.serve)
	h.srv = &http.Server{Handler: mux, ErrorLog: slog.NewLogLogger(quiet().Handler(), slog.LevelDebug)}
	h.wg.Go(func() { _ = h.srv.Serve(ln) })
	t.Cleanup(h.stop)
	return h
}

// stop kills the hub: listener and every session.
func (h *testHub) stop() {
	_ = h.srv.Close()
	h.mu.Lock()
	for c := range h.conns {
		c.CloseNow()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *testHub) serve(w http.ResponseWriter, r *http.Request) {
	h.wg.Add(1)
	defer h.wg.Done()
	id, err := pki.PeerIdentity(r.TLS)
	if err != nil || id.Role != pki.RoleRelay {
		http.Error(w, "relays only", http.StatusForbidden)
		return
	}
	up := wire.NewUpgrader()
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	conn := wire.NewConn(ws, wire.LimitSnapshot, 30*time.Second)
	defer conn.CloseNow()
	ctx := context.Background()
	if m, _, err := conn.Read(ctx); err != nil || m.Type() != wire.TypeRelayHello {
		return
	}
	m, _, err := conn.Read(ctx)
	if err != nil {
		return
	}
	snap, ok := m.(*wire.Snapshot)
	if !ok {
		return
	}
	h.mu.Lock()
	h.snapshots = append(h.snapshots, *snap)
	h.conns[conn] = true
	var d wire.Desired
	for a, hash := range h.desired {
		d.Items = append(d.Items, wire.DesiredBundle{Agent: a, Hash: hash})
	}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.conns, conn)
		h.mu.Unlock()
	}()
	if len(d.Items) > 0 {
		_ = conn.Write(&d, nil)
	}
	for {
		m, _, err := conn.Read(ctx)
		if err != nil {
			return
		}
		h.mu.Lock()
		switch m := m.(type) {
		case *wire.FetchBundle:
			h.fetches[m.Hash]++
			b, ok := h.bundles[m.Hash]
			h.mu.Unlock()
			if ok {
				_ = conn.Write(&wire.BundleData{Hash: m.Hash, Encoding: wire.EncodingGzip, Size: b.size}, b.payload)
			}
			continue
		case *wire.Results:
			h.results = append(h.results, m.Items...)
			h.resultMsgs++
		case *wire.Heartbeats:
			h.beats += len(m.Items)
		case *wire.SessionDelta:
			h.deltas = append(h.deltas, *m)
		}
		h.mu.Unlock()
	}
}

// addBundle makes b fetchable.
func (h *testHub) addBundle(b *nginx.Bundle) {
	h.t.Helper()
	raw, err := b.MarshalBinary()
	if err != nil {
		h.t.Fatal(err)
	}
	z, err := wire.Compress(raw)
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	h.bundles[b.Hash] = hubBundle{size: int64(len(raw)), payload: z}
	h.mu.Unlock()
}

// setDesired assigns hash to agents and tells every connected relay.
func (h *testHub) setDesired(hash string, agents ...string) {
	var d wire.Desired
	h.mu.Lock()
	for _, a := range agents {
		h.desired[a] = hash
		d.Items = append(d.Items, wire.DesiredBundle{Agent: a, Hash: hash})
	}
	h.mu.Unlock()
	h.send(&d, nil)
}

// send writes m with payload to every connected relay.
func (h *testHub) send(m wire.Message, payload []byte) {
	h.mu.Lock()
	conns := make([]*wire.Conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		_ = c.Write(m, payload)
	}
}

func (h *testHub) fetchCount(hash string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fetches[hash]
}

func (h *testHub) connected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns) > 0
}

// acked reports whether agent's result for hash with state arrived.
func (h *testHub) acked(agentID, hash, state string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.results {
		if r.Agent == agentID && r.Result.Hash == hash && r.Result.State == state {
			return true
		}
	}
	return false
}

func (h *testHub) lastSnapshot() (wire.Snapshot, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.snapshots) == 0 {
		return wire.Snapshot{}, 0
	}
	return h.snapshots[len(h.snapshots)-1], len(h.snapshots)
}

// ---- relay ----

type testRelay struct {
	*relay.Server
	url string
}

// startRelay runs a relay with a real relay certificate on loopback until
// the test ends (or stop is called).
func startRelay(t testing.TB, c *ca.CA, stateDir string, hubs []string, mutate func(*relay.Config)) (*testRelay, func()) {
	t.Helper()
	src, _ := enroll(t, c, ca.TokenRequest{Role: pki.RoleRelay})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.Config{
		Listener:          ln,
		Hubs:              hubs,
		StateDir:          stateDir,
		Source:            src,
		TrustDomain:       td,
		Roots:             c.Roots(),
		HeartbeatInterval: time.Second,
		FlushInterval:     20 * time.Millisecond,
		MinBackoff:        10 * time.Millisecond,
		MaxBackoff:        200 * time.Millisecond,
		Logger:            quiet(),
		IsRevoked:         func(serial string) (bool, error) { return c.IsRevoked(context.Background(), serial) },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("relay Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("relay Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return &testRelay{Server: s, url: "wss://" + ln.Addr().String() + "/v1/agent"}, stop
}

// ---- agents ----

// memApplier is a TEST DOUBLE for agent.Applier where nginx is not the
// point: applying makes the bundle "live" in memory.
type memApplier struct {
	mu   sync.Mutex // guards live and n
	live string
	n    int
}

func (m *memApplier) Live() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live, nil
}

func (m *memApplier) apply(_ context.Context, b *nginx.Bundle) agent.Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	prev := m.live
	m.live = b.Hash
	m.n++
	return agent.Result{State: agent.Applied, Hash: b.Hash, PreviousHash: prev}
}

// memAgent runs a real agent.Session and Loop with a memApplier.
type memAgent struct {
	id      string
	applier *memApplier
	stop    func()
	// deltas counts the BundleDeltas the session applied (only agents
	// started with startDeltaAgent take them).
	deltas atomic.Int64
	// connects counts the sessions established.
	connects atomic.Int64
}

func startMemAgent(t testing.TB, c *ca.CA, relays ...string) *memAgent {
	t.Helper()
	tlsCfg, id := agentTLS(t, c)
	return startMemAgentWith(t, tlsCfg, id, relays...)
}

func startMemAgentWith(t testing.TB, tlsCfg *tls.Config, id string, relays ...string) *memAgent {
	t.Helper()
	return startAgent(t, tlsCfg, id, false, nil, relays...)
}

// connectMemAgents starts n memAgents on r and waits until all have a
// session and r's upstream session to hub is up.
func connectMemAgents(t testing.TB, c *ca.CA, r *testRelay, hub *testHub, n int) ([]*memAgent, []string) {
	t.Helper()
	var agents []*memAgent
	var ids []string
	for range n {
		a := startMemAgent(t, c, r.url)
		agents = append(agents, a)
		ids = append(ids, a.id)
	}
	eventually(t, 20*time.Second, fmt.Sprintf("%d agents connected", n), func() bool { return r.Stats().AgentsConnected == n })
	eventually(t, 10*time.Second, "upstream connected", func() bool { return hub.connected() })
	return agents, ids
}

// startDeltaAgent is startMemAgent for an agent that keeps its last
// bundle and takes deltas (wire.CapBundleDelta).
func startDeltaAgent(t testing.TB, c *ca.CA, relays ...string) *memAgent {
	t.Helper()
	tlsCfg, id := agentTLS(t, c)
	return startAgent(t, tlsCfg, id, true, nil, relays...)
}

// startAgent starts a memAgent; clock, when set, is its session's.
func startAgent(t testing.TB, tlsCfg *tls.Config, id string, deltas bool, clock agent.Clock, relays ...string) *memAgent {
	t.Helper()
	a := &memAgent{id: id, applier: &memApplier{}}
	sess := &agent.Session{Relays: relays, TLS: tlsCfg, Applier: a.applier, Logger: quiet(), Clock: clock,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	loop := agent.NewLoop(a.applier.apply, nil, sess.Report)
	sess.Loop = loop
	sess.OnConnect = func() { a.connects.Add(1) }
	if deltas {
		loop.KeepApplied()
		sess.Kept = loop
		sess.OnDelta = func(applied bool) {
			if applied {
				a.deltas.Add(1)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = loop.Run(ctx) })
	wg.Go(func() { _ = sess.Run(ctx) })
	var once sync.Once
	a.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(a.stop)
	return a
}

func (a *memAgent) live() string {
	h, _ := a.applier.Live()
	return h
}

// testBundle is a valid sealed bundle; size random bytes make it
// incompressible and large.
func testBundle(t testing.TB, name string, size int) *nginx.Bundle {
	t.Helper()
	data := make([]byte, size)
	_, _ = rand.Read(data)
	b, err := nginx.Seal([]nginx.File{
		{Path: "nginx.conf", Data: []byte("# " + name + "\n")},
		{Path: "blob", Data: data},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sendDelta sends every connected relay the delta from base to b, as a
// hub does before the assignments that use it.
func (h *testHub) sendDelta(base, b *nginx.Bundle) {
	data := nginx.Diff(base, b)
	h.send(&wire.DeltaData{Hash: b.Hash, Base: base.Hash, Encoding: wire.EncodingIdentity, Size: int64(len(data))}, data)
}
