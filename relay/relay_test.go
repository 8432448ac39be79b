package relay_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/pki/ca"
	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/schema"
	"github.com/nxmesh/nxmesh/wire"
)

// realNginxBundle is the bundle the compiler makes for one vhost on
// vhostPort answering body, with the status server on statusPort.
func realNginxBundle(t testing.TB, statusPort, vhostPort int, body string) *nginx.Bundle {
	t.Helper()
	docs, err := schema.Decode("site.yaml", fmt.Appendf(nil, `apiVersion: nxmesh/v1
kind: VirtualHost
metadata: {name: v}
spec:
  serverNames: [localhost]
  listen: [{port: %d}]
  locations: [{path: /, return: {status: 200, body: %q}}]
`, vhostPort, body))
	if err != nil {
		t.Fatal(err)
	}
	b, err := nginx.Compile(docs, nginx.Options{StatusListen: fmt.Sprintf("127.0.0.1:%d", statusPort)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startRealAgent runs agent.Session with a real Applier and a managed nginx.
func startRealAgent(t *testing.T, c *ca.CA, statusPort int, relays ...string) (string, *agent.Applier) {
	t.Helper()
	dir := t.TempDir()
	bin := testenv.NginxBinary(t)
	child := nginx.NewChild(bin, dir, filepath.Join(dir, "current", "nginx.conf"))
	t.Cleanup(func() { _ = child.Stop(context.Background()) })
	ap, err := agent.New(agent.Config{StateDir: dir, Binary: bin, Reloader: child, StatusURL: fmt.Sprintf("http://127.0.0.1:%d", statusPort), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ap.Recover(context.Background()); err != nil {
		t.Fatal(err)
	}
	tlsCfg, id := agentTLS(t, c)
	sess := &agent.Session{Relays: relays, TLS: tlsCfg, Applier: ap, Kept: ap, Logger: quiet(), MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	loop := agent.NewLoop(ap.Apply, nil, sess.Report)
	sess.Loop = loop
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = loop.Run(ctx); done <- struct{}{} }()
	go func() { _ = sess.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return id, ap
}

func httpGet(url string) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var sb strings.Builder
	_, err = fmt.Fprint(&sb, "")
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	sb.Write(buf[:n])
	return sb.String(), err
}

// TestFanOutThroughRelay: three in-memory agents and one real agent with a
// real nginx get the desired bundle through the relay and ack it; the relay
// fetches the bundle from the hub exactly once for all of them.
func TestFanOutThroughRelay(t *testing.T) {
	c := openCA(t, 1)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, nil)
	eventually(t, 10*time.Second, "upstream connected", func() bool { return r.Stats().UpstreamConnected })

	statusPort, vhostPort := testenv.FreePort(t), testenv.FreePort(t)
	b := realNginxBundle(t, statusPort, vhostPort, "served via relay")
	hub.addBundle(b)

	var mem []*memAgent
	for range 3 {
		mem = append(mem, startMemAgent(t, c, r.url))
	}
	realID, ap := startRealAgent(t, c, statusPort, r.url)
	eventually(t, 10*time.Second, "4 agents connected", func() bool { return r.Stats().AgentsConnected == 4 })

	ids := []string{realID}
	for _, a := range mem {
		ids = append(ids, a.id)
	}
	hub.setDesired(b.Hash, ids...)
	for _, id := range ids {
		eventually(t, 20*time.Second, "ack from "+id, func() bool { return hub.acked(id, b.Hash, wire.ResultApplied) })
	}
	for _, a := range mem {
		if a.live() != b.Hash {
			t.Errorf("agent %s runs %q, want %s", a.id, a.live(), b.Hash)
		}
	}
	if live, _ := ap.Live(); live != b.Hash {
		t.Errorf("real agent runs %q, want %s", live, b.Hash)
	}
	body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", vhostPort))
	if err != nil || body != "served via relay" {
		t.Errorf("real nginx answers %q, %v", body, err)
	}
	if n := hub.fetchCount(b.Hash); n != 1 {
		t.Errorf("hub saw %d FetchBundle for the bundle, want 1", n)
	}
	if s := r.Stats(); s.BundlesCached != 1 {
		t.Errorf("relay caches %d bundles, want 1", s.BundlesCached)
	}
	// Heartbeats flow upstream, batched.
	eventually(t, 10*time.Second, "heartbeats upstream", func() bool {
		hub.mu.Lock()
		defer hub.mu.Unlock()
		return hub.beats > 0
	})

	// A change: the real agent, which keeps its releases, builds it from
	// the delta; the in-memory agents, which keep nothing, get it whole.
	b2 := realNginxBundle(t, statusPort, vhostPort, "changed via delta")
	hub.addBundle(b2)
	hub.sendDelta(b, b2)
	hub.setDesired(b2.Hash, ids...)
	for _, id := range ids {
		eventually(t, 20*time.Second, "ack of the change from "+id, func() bool { return hub.acked(id, b2.Hash, wire.ResultApplied) })
	}
	if body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", vhostPort)); err != nil || body != "changed via delta" {
		t.Errorf("real nginx answers %q, %v after the delta", body, err)
	}
	if s := r.Stats(); s.DeltasSent != 1 || s.BundlesSent != 4+3 {
		t.Errorf("relay sent %d deltas and %d whole bundles, want 1 (to the real agent) and 7", s.DeltasSent, s.BundlesSent)
	}
}

// TestOneFetchPerHashForManyAgents: 20 agents wanting the same uncached
// bundle at the same moment cause one FetchBundle.
func TestOneFetchPerHashForManyAgents(t *testing.T) {
	c := openCA(t, 2)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, nil)
	agents, ids := connectMemAgents(t, c, r, hub, 20)
	b := testBundle(t, "many", 64<<10)
	hub.addBundle(b)
	hub.setDesired(b.Hash, ids...)
	for _, a := range agents {
		eventually(t, 20*time.Second, "agent "+a.id+" applied", func() bool { return a.live() == b.Hash })
	}
	if n := hub.fetchCount(b.Hash); n != 1 {
		t.Errorf("hub saw %d FetchBundle, want 1", n)
	}
	if n := r.Stats().FetchesSent; n != 1 {
		t.Errorf("relay sent %d fetches, want 1", n)
	}
}

// TestResultsShareUpstreamWrites: the results of a push to 20 agents reach
// the hub, in at most two Results messages: flushes that results ask for
// are FlushLinger apart, and the acks arrive within less than that.
func TestResultsShareUpstreamWrites(t *testing.T) {
	c := openCA(t, 2)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, func(cfg *relay.Config) {
		cfg.FlushInterval = time.Hour // only what is kicked goes up
		cfg.FlushLinger = time.Second
	})
	_, ids := connectMemAgents(t, c, r, hub, 20)
	b := testBundle(t, "shared", 1<<10)
	hub.addBundle(b)
	hub.setDesired(b.Hash, ids...)
	for _, id := range ids {
		eventually(t, 20*time.Second, "ack from "+id, func() bool { return hub.acked(id, b.Hash, wire.ResultApplied) })
	}
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.resultMsgs > 2 {
		t.Errorf("20 results went up in %d Results messages, want at most 2", hub.resultMsgs)
	}
}

// rawAgent dials the relay as an agent without the Session, to misbehave.
func rawAgent(t testing.TB, tlsCfg *tls.Config, url string) (*websocket.Conn, error) {
	t.Helper()
	ws, _, err := wire.NewDialer(tlsCfg).Dial(url, nil)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	return ws, nil
}

func sendFrame(t testing.TB, ws *websocket.Conn, m wire.Message) {
	t.Helper()
	frame, err := wire.Encode(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		t.Fatal(err)
	}
}

// closeCode reads until the connection ends and returns the close code.
func closeCode(t testing.TB, ws *websocket.Conn) (int, string) {
	t.Helper()
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text
			}
			return -1, err.Error()
		}
	}
}

// TestSlowAgentIsDisconnected: an agent that never reads fills its queue
// and is cut with 4005 and counted, while a good agent keeps receiving.
func TestSlowAgentIsDisconnected(t *testing.T) {
	c := openCA(t, 3)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, func(cfg *relay.Config) {
		cfg.SendQueue = 2
		cfg.HeartbeatInterval = 10 * time.Second // the slow agent stays silent
	})
	good := startMemAgent(t, c, r.url)
	slowTLS, slowID := agentTLS(t, c)
	ws, err := rawAgent(t, slowTLS, r.url)
	if err != nil {
		t.Fatal(err)
	}
	sendFrame(t, ws, &wire.Hello{Protocol: wire.Protocol})
	eventually(t, 10*time.Second, "2 agents", func() bool { return r.Stats().AgentsConnected == 2 })
	eventually(t, 10*time.Second, "upstream", func() bool { return hub.connected() })

	var last *nginx.Bundle
	for i := 0; i < 40 && r.Stats().SlowDisconnects == 0; i++ {
		last = testBundle(t, fmt.Sprint("slow", i), 2<<20)
		hub.addBundle(last)
		hub.setDesired(last.Hash, slowID, good.id)
		time.Sleep(50 * time.Millisecond) // pace the updates so the good agent keeps up
	}
	eventually(t, 15*time.Second, "slow disconnect counted", func() bool { return r.Stats().SlowDisconnects == 1 })
	eventually(t, 20*time.Second, "good agent gets the last bundle", func() bool { return good.live() == last.Hash })
	eventually(t, 10*time.Second, "slow agent gone", func() bool { return r.Stats().AgentsConnected == 1 })
	// A later bundle still reaches the good agent.
	next := testBundle(t, "after", 1024)
	hub.addBundle(next)
	hub.setDesired(next.Hash, good.id)
	eventually(t, 10*time.Second, "good agent gets the next bundle", func() bool { return good.live() == next.Hash })
}

// TestBadMessageClosesOnlyThatSession: a malformed, oversized, unknown,
// misdirected or wrong-version message closes that session with the right
// code; another agent's session is untouched.
func TestBadMessageClosesOnlyThatSession(t *testing.T) {
	c := openCA(t, 4)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, nil)
	good := startMemAgent(t, c, r.url)
	eventually(t, 10*time.Second, "good agent", func() bool { return r.Stats().AgentsConnected == 1 })

	hello, _ := wire.Encode(&wire.Hello{Protocol: wire.Protocol}, nil)
	huge := append([]byte{byte(wire.TypeResult)}, make([]byte, wire.MaxAgentMessage+10)...)
	bigHeartbeat := append([]byte{byte(wire.TypeHeartbeat)}, make([]byte, wire.LimitHeartbeat+10)...)
	tests := []struct {
		name   string
		frames [][]byte
		text   bool
		code   int
		reason string
	}{
		{"wrong version", [][]byte{mustEncode(t, &wire.Hello{Protocol: 99})}, false, wire.CloseProtocolMismatch, "we speak 1, peer speaks 99"},
		{"first message not hello", [][]byte{mustEncode(t, &wire.Heartbeat{})}, false, wire.CloseMalformed, ""},
		{"malformed", [][]byte{hello, {byte(wire.TypeHeartbeat), 5, 'x'}}, false, wire.CloseMalformed, ""},
		{"unknown type", [][]byte{hello, {0x7f, 2, '{', '}'}}, false, wire.CloseMalformed, ""},
		{"oversized frame", [][]byte{hello, huge}, false, wire.CloseTooLarge, ""},
		{"oversized heartbeat", [][]byte{hello, bigHeartbeat}, false, wire.CloseTooLarge, ""},
		{"wrong direction", [][]byte{hello, mustEncode(t, &wire.Desired{})}, false, wire.CloseMalformed, ""},
		{"text frame", [][]byte{hello, []byte("hi")}, true, wire.CloseMalformed, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tlsCfg, _ := agentTLS(t, c)
			ws, err := rawAgent(t, tlsCfg, r.url)
			if err != nil {
				t.Fatal(err)
			}
			for i, f := range tc.frames {
				mt := websocket.BinaryMessage
				if tc.text && i == len(tc.frames)-1 {
					mt = websocket.TextMessage
				}
				if err := ws.WriteMessage(mt, f); err != nil {
					t.Fatal(err)
				}
			}
			code, reason := closeCode(t, ws)
			if tc.name == "oversized frame" && code == websocket.CloseMessageTooBig {
				// Over the connection limit gorilla itself closes with
				// 1009 as soon as the frame header arrives (wire.NewConn).
				return
			}
			if code != tc.code || !strings.Contains(reason, tc.reason) {
				t.Fatalf("closed with %d %q, want %d containing %q", code, reason, tc.code, tc.reason)
			}
		})
	}
	// The good session survived all of it and still gets bundles.
	eventually(t, 5*time.Second, "only the good agent connected", func() bool { return r.Stats().AgentsConnected == 1 })
	b := testBundle(t, "after-bad", 1024)
	hub.addBundle(b)
	hub.setDesired(b.Hash, good.id)
	eventually(t, 10*time.Second, "good agent applies", func() bool { return good.live() == b.Hash })
}

func mustEncode(t testing.TB, m wire.Message) []byte {
	t.Helper()
	f, err := wire.Encode(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestColdStartFromDiskCache: the relay restarts with every hub gone; an
// agent with an empty state (same certificate) still gets its last desired
// bundle from the relay's disk cache.
func TestColdStartFromDiskCache(t *testing.T) {
	c := openCA(t, 5)
	hub := startTestHub(t, c, "hub-1")
	state := t.TempDir()
	r1, stop1 := startRelay(t, c, state, []string{hub.url}, nil)
	tlsCfg, id := agentTLS(t, c)
	a1 := startMemAgentWith(t, tlsCfg, id, r1.url)
	b := testBundle(t, "cold", 4096)
	hub.addBundle(b)
	hub.setDesired(b.Hash, id)
	eventually(t, 10*time.Second, "first apply", func() bool { return a1.live() == b.Hash })
	a1.stop()
	stop1()
	hubURL := hub.url
	hub.stop()

	r2, _ := startRelay(t, c, state, []string{hubURL}, nil)
	if s := r2.Stats(); s.BundlesCached != 1 || s.UpstreamConnected {
		t.Fatalf("restarted relay: %+v, want 1 bundle cached and no upstream", s)
	}
	a2 := startMemAgentWith(t, tlsCfg, id, r2.url) // empty memApplier: live ""
	eventually(t, 10*time.Second, "cold-start apply", func() bool { return a2.live() == b.Hash })
}

// TestHubFailover: the relay's hub dies; it fails over to the other hub,
// sends a fresh Snapshot there, and desired bundles flow from the new hub.
func TestHubFailover(t *testing.T) {
	c := openCA(t, 6)
	h1 := startTestHub(t, c, "hub-1")
	h2 := startTestHub(t, c, "hub-2")
	r, _ := startRelay(t, c, t.TempDir(), []string{h1.url, h2.url}, nil)
	a := startMemAgent(t, c, r.url)
	eventually(t, 10*time.Second, "agent connected", func() bool { return r.Stats().AgentsConnected == 1 })
	eventually(t, 10*time.Second, "a hub connected", func() bool { return h1.connected() || h2.connected() })
	first, second := h1, h2
	if h2.connected() {
		first, second = h2, h1
	}
	first.stop()
	eventually(t, 10*time.Second, "failover", func() bool { return second.connected() })
	eventually(t, 10*time.Second, "snapshot with the agent", func() bool {
		snap, n := second.lastSnapshot()
		if n == 0 {
			return false
		}
		for _, s := range snap.Agents {
			if s.ID == a.id && s.Workspace == "ws1" {
				return true
			}
		}
		// The agent may have connected after the snapshot: then a delta
		// carries it.
		second.mu.Lock()
		defer second.mu.Unlock()
		for _, d := range second.deltas {
			for _, s := range d.Connected {
				if s.ID == a.id {
					return true
				}
			}
		}
		return false
	})
	b := testBundle(t, "failover", 1024)
	second.addBundle(b)
	second.setDesired(b.Hash, a.id)
	eventually(t, 10*time.Second, "apply via the second hub", func() bool { return a.live() == b.Hash })
	eventually(t, 10*time.Second, "ack at the second hub", func() bool { return second.acked(a.id, b.Hash, wire.ResultApplied) })
}

// TestRevokeCutsSession: Revoke from the hub closes the session with 4004
// and the agent is refused afterwards.
func TestRevokeCutsSession(t *testing.T) {
	c := openCA(t, 7)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, nil)
	tlsCfg, id := agentTLS(t, c)
	ws, err := rawAgent(t, tlsCfg, r.url)
	if err != nil {
		t.Fatal(err)
	}
	sendFrame(t, ws, &wire.Hello{Protocol: wire.Protocol})
	eventually(t, 10*time.Second, "agent + upstream", func() bool { return r.Stats().AgentsConnected == 1 && hub.connected() })
	hub.send(&wire.Revoke{Agents: []string{id}, Reason: "agent deleted"}, nil)
	if code, reason := closeCode(t, ws); code != wire.CloseRevoked || reason != "agent deleted" {
		t.Fatalf("closed with %d %q, want %d", code, reason, wire.CloseRevoked)
	}
	ws2, err := rawAgent(t, tlsCfg, r.url)
	if err != nil {
		t.Fatal(err)
	}
	sendFrame(t, ws2, &wire.Hello{Protocol: wire.Protocol})
	if code, _ := closeCode(t, ws2); code != wire.CloseRevoked {
		t.Fatalf("reconnect closed with %d, want %d", code, wire.CloseRevoked)
	}
}

// TestForeignAndWrongRoleCertificatesRefused: an agent certificate from a
// foreign CA and a relay certificate posing as an agent fail the TLS
// handshake; a certificate revoked at the CA is refused by IsRevoked.
func TestForeignAndWrongRoleCertificatesRefused(t *testing.T) {
	c := openCA(t, 8)
	r, _ := startRelay(t, c, t.TempDir(), nil, nil)

	foreign := openCA(t, 9) // same trust domain name, different root
	fsrc, _ := enroll(t, foreign, ca.TokenRequest{Workspace: "ws1", Role: pki.RoleAgent})
	if _, err := rawAgent(t, clientTLS(t, c, fsrc, pki.RoleRelay), r.url); err == nil {
		t.Error("agent certificate from a foreign CA was accepted")
	}
	rsrc, _ := enroll(t, c, ca.TokenRequest{Role: pki.RoleRelay})
	if _, err := rawAgent(t, clientTLS(t, c, rsrc, pki.RoleRelay), r.url); err == nil {
		t.Error("relay certificate was accepted as an agent")
	}
	asrc, iss := enroll(t, c, ca.TokenRequest{Workspace: "ws1", Role: pki.RoleAgent})
	if err := c.Revoke(context.Background(), iss.Leaf.SerialNumber.String(), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := rawAgent(t, clientTLS(t, c, asrc, pki.RoleRelay), r.url); err == nil {
		t.Error("revoked agent certificate was accepted")
	}
	// A valid agent gets in.
	okTLS, _ := agentTLS(t, c)
	if _, err := rawAgent(t, okTLS, r.url); err != nil {
		t.Errorf("valid agent refused: %v", err)
	}
}
