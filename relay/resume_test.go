package relay_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/wire"
)

// hello opens an agent session by hand: it sends Hello and reads the
// Welcome (which also processes the session ticket). The caller closes
// the Conn.
func hello(t *testing.T, cfg *tls.Config, url string, pingWait time.Duration) (*wire.Conn, *websocket.Conn) {
	t.Helper()
	ws, _, err := wire.NewDialer(cfg).Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn := wire.NewConn(ws, wire.MaxRelayMessage, pingWait)
	if err := conn.Write(&wire.Hello{Protocol: wire.Protocol}, nil); err != nil {
		conn.CloseNow()
		t.Fatal(err)
	}
	if m, _, err := conn.Read(context.Background()); err != nil {
		t.Fatalf("read welcome: %v", err)
	} else if _, ok := m.(*wire.Welcome); !ok {
		conn.CloseNow()
		t.Fatalf("first message %s, want welcome", m.Type())
	}
	return conn, ws
}

// helloResumed opens an agent session and reports whether TLS resumed.
func helloResumed(t *testing.T, cfg *tls.Config, url string) bool {
	t.Helper()
	conn, ws := hello(t, cfg, url, wire.HandshakeTimeout)
	defer conn.CloseNow()
	return ws.UnderlyingConn().(*tls.Conn).ConnectionState().DidResume
}

// TestSessionResumptionAcrossRestart: an agent that reconnects to its
// relay after the relay restarted resumes its TLS session, because the
// relay keeps its ticket keys in its state directory; a relay with other
// keys makes it do a full handshake.
func TestSessionResumptionAcrossRestart(t *testing.T) {
	c := openCA(t, 1)
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	url := "wss://" + addr + "/v1/agent"
	_, stop := startRelay(t, c, dir, nil, func(cfg *relay.Config) { cfg.Listener = ln })
	cfg, _ := agentTLS(t, c)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	if helloResumed(t, cfg, url) {
		t.Fatal("first connection resumed a session it never had")
	}
	stop()

	for _, tc := range []struct {
		name   string
		dir    string
		resume bool
	}{{"same state dir", dir, true}, {"other state dir", t.TempDir(), false}} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, stop := startRelay(t, c, tc.dir, nil, func(cfg *relay.Config) { cfg.Listener = ln })
		if got := helloResumed(t, cfg, url); got != tc.resume {
			t.Errorf("%s: resumed %v, want %v", tc.name, got, tc.resume)
		}
		stop()
	}
}

// TestAgentKeyExchange: an agent's full handshakes use the post-quantum
// hybrid key exchange; with a session ticket it resumes on P-256; and when
// a restarted relay no longer knows its ticket, the connection it keeps is
// again on the hybrid.
func TestAgentKeyExchange(t *testing.T) {
	c := openCA(t, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	dir := t.TempDir()
	_, stop := startRelay(t, c, dir, nil, func(cfg *relay.Config) { cfg.Listener = ln })

	cfg, _ := agentTLS(t, c)
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	type connInfo struct {
		curve   tls.CurveID
		resumed bool
	}
	var (
		mu   sync.Mutex
		last connInfo
	)
	connected := make(chan connInfo, 8)
	app := &memApplier{}
	sess := &agent.Session{
		Relays: []string{"wss://" + addr + "/v1/agent"}, TLS: cfg, Applier: app, Logger: quiet(),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnTLS: func(cs tls.ConnectionState) {
			mu.Lock()
			defer mu.Unlock()
			last = connInfo{cs.CurveID, cs.DidResume}
		},
		// Welcome has been read, and with it the session ticket sent
		// before it.
		OnConnect: func() {
			mu.Lock()
			defer mu.Unlock()
			connected <- last
		},
	}
	loop := agent.NewLoop(app.apply, nil, sess.Report)
	sess.Loop = loop
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = loop.Run(ctx) })
	wg.Go(func() { _ = sess.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })

	next := func(what string, want connInfo) {
		t.Helper()
		select {
		case got := <-connected:
			if got != want {
				t.Fatalf("%s: key exchange %v, resumed %v; want %v, %v", what, got.curve, got.resumed, want.curve, want.resumed)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the agent did not connect", what)
		}
	}
	restart := func(stateDir string) {
		stop()
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, stop = startRelay(t, c, stateDir, nil, func(cfg *relay.Config) { cfg.Listener = ln })
	}
	next("first connection", connInfo{tls.X25519MLKEM768, false})
	restart(dir)
	next("after a restart with the same ticket keys", connInfo{tls.CurveP256, true})
	restart(t.TempDir())
	// The ticket is declined and the P-256 full handshake dropped; the
	// second dial offers the ticket that handshake issued, on the hybrid.
	next("after a restart with new ticket keys", connInfo{tls.X25519MLKEM768, true})
	stop()
}
