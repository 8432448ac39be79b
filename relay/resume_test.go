package relay_test

import (
	"context"
	"crypto/tls"
	"net"
	"testing"

	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/wire"
)

// helloResumed opens an agent session, reads the Welcome (which also
// processes the session ticket) and reports whether TLS resumed.
func helloResumed(t *testing.T, cfg *tls.Config, url string) bool {
	t.Helper()
	ws, _, err := wire.NewDialer(cfg).Dial(url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn := wire.NewConn(ws, wire.MaxRelayMessage, wire.HandshakeTimeout)
	defer conn.CloseNow()
	if err := conn.Write(&wire.Hello{Protocol: wire.Protocol}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := conn.Read(context.Background()); err != nil {
		t.Fatalf("read welcome: %v", err)
	}
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
