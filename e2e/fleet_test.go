package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/hub"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/wire"
)

// brokenSite is site with an upstream host that does not resolve: it passes
// NxMesh's validation but `nginx -t` refuses it.
func brokenSite(port int, version string) string {
	return strings.Replace(site(port, 1, version), `"127.0.0.1:1"`, `"nxmesh-no-such-host.invalid:80"`, 1)
}

// TestRejectedChangeKeepsServing: a change nginx rejects is nacked with
// nginx's message, visible through the API; nginx keeps serving the
// previous config and no request fails. The agent connects to the hub's
// embedded relay directly.
func TestRejectedChangeKeepsServing(t *testing.T) {
	h := startHub(t, "")
	a := enrollAgent(t, h, nil)
	a.run(h.agentURL())
	up := upstream(t, "ok")
	port := testenvPort(t)
	good := h.apply(site(port, up, "v1"))
	waitServed(t, port, "v1", 10*time.Second)
	h.waitConverged(good.Revision, 5*time.Second)

	var sent, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			sent.Add(1)
			if _, v, err := fetch(port); err != nil || v != "v1" {
				failed.Add(1)
				t.Errorf("request during the rejected change: version %q, %v", v, err)
			}
		}
	})

	bad := h.apply(brokenSite(port, "v2"))
	var c = h.convergence(bad.Revision)
	for deadline := time.Now().Add(10 * time.Second); c.Counts.Rejected == 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond) // polling the API
		c = h.convergence(bad.Revision)
	}
	close(stop)
	wg.Wait()
	if c.Counts.Rejected != 1 || len(c.Failing) != 1 {
		t.Fatalf("convergence of the broken revision = %+v; want one rejected agent", c)
	}
	f := c.Failing[0]
	if f.Agent != a.id || f.State != "rejected" || !strings.Contains(f.Output, "host not found") {
		t.Errorf("failing agent = %+v; want %s rejected with nginx's host-not-found message", f, a.id)
	}
	var got struct {
		Status     string
		LastResult struct{ State, Output string }
	}
	h.mustDo("GET", "/api/v1/workspaces/default/agents/"+a.id, nil, &got)
	if got.Status != "rejected" || got.LastResult.State != "rejected" || !strings.Contains(got.LastResult.Output, "host not found") {
		t.Errorf("GET agent = %+v; want the nack with nginx's output", got)
	}
	if _, v, err := fetch(port); err != nil || v != "v1" {
		t.Errorf("after the nack nginx serves %q, %v; want v1", v, err)
	}
	t.Logf("%d requests during the rejected change, %d failed", sent.Load(), failed.Load())
}

// TestBurstOfWrites: fifty API writes within one second end with every
// agent on the last revision, each having applied at most three times.
func TestBurstOfWrites(t *testing.T) {
	h := startHub(t, "")
	r := startRelay(t, h)
	up := upstream(t, "ok")
	agents := []*agentEnv{enrollAgent(t, h, map[string]string{"name": "a"}), enrollAgent(t, h, map[string]string{"name": "b"})}
	ports := []int{testenvPort(t), testenvPort(t)}
	twoSites := func(version string) string {
		var docs []string
		for i, name := range []string{"a", "b"} {
			s := site(ports[i], up, version)
			s = strings.Replace(s, "metadata: {name: site}", "metadata: {name: site-"+name+"}", 1)
			s = strings.Replace(s, "  locations:", "  selector: {matchLabels: {name: "+name+"}}\n  locations:", 1)
			if i > 0 { // one Upstream is enough
				s = s[strings.Index(s, "---\n")+4:]
			}
			docs = append(docs, s)
		}
		return strings.Join(docs, "---\n")
	}
	for _, a := range agents {
		a.run(r.url())
	}
	first := h.apply(twoSites("v0"))
	h.waitConverged(first.Revision, 10*time.Second)
	marks := []int{agents[0].results.count(), agents[1].results.count()}

	start := time.Now()
	var last applyResult
	for i := 1; i <= 50; i++ {
		last = h.apply(twoSites(fmt.Sprintf("v%d", i)))
		if !last.Changed {
			t.Fatalf("write %d changed nothing", i)
		}
		time.Sleep(time.Until(start.Add(time.Duration(i) * 20 * time.Millisecond))) // pacing 50 writes over one second
	}
	t.Logf("50 writes took %v", time.Since(start).Round(time.Millisecond))
	h.waitConverged(last.Revision, 15*time.Second)
	for i, a := range agents {
		waitServed(t, ports[i], "v50", 5*time.Second)
		applies := a.results.since(marks[i])
		t.Logf("agent %s applied %d times for 50 writes", a.id, len(applies))
		if len(applies) == 0 || len(applies) > 3 {
			t.Errorf("agent %s applied %d times during the burst; want 1 to 3", a.id, len(applies))
		}
		for _, res := range applies {
			if res.State != "applied" {
				t.Errorf("agent %s: apply %s: %s", a.id, res.State, res.Reason)
			}
		}
	}
}

// TestColdStartWithoutHub: with every hub stopped, an agent restarted with
// an empty state directory but a valid certificate gets its config from
// its relay's cache and serves it.
func TestColdStartWithoutHub(t *testing.T) {
	h := startHub(t, "")
	r := startRelay(t, h)
	a := enrollAgent(t, h, nil)
	a.run(r.url())
	up := upstream(t, "ok")
	port := testenvPort(t)
	res := h.apply(site(port, up, "v1"))
	h.waitConverged(res.Revision, 10*time.Second)
	waitServed(t, port, "v1", 5*time.Second)

	h.stop()
	a.stop() // stops its nginx too
	if _, _, err := fetch(port); err == nil {
		t.Fatal("nginx still serves after the agent stopped")
	}
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		t.Fatal(err)
	}
	keep := map[string]bool{"agent.key": true, "agent.crt": true, "root.pem": true}
	for _, e := range entries {
		if !keep[e.Name()] {
			if err := os.RemoveAll(filepath.Join(a.dir, e.Name())); err != nil {
				t.Fatal(err)
			}
		}
	}
	a.run(r.url())
	waitServed(t, port, "v1", 10*time.Second)
}

// TestRelayFailoverAndHubRestart: killing a relay moves its agents to the
// second relay, where they converge on a new revision; restarting the hub
// brings relays and agents back without any agent applying again.
func TestRelayFailoverAndHubRestart(t *testing.T) {
	h := startHub(t, "")
	r1, r2 := startRelay(t, h), startRelay(t, h)
	up := upstream(t, "ok")
	port := testenvPort(t)
	a := enrollAgent(t, h, map[string]string{"path": "relay"})
	a.run(r1.url(), r2.url())
	direct := enrollAgent(t, h, map[string]string{"path": "direct"})
	direct.run(h.agentURL())
	// The direct agent serves another port: both run on this machine.
	directPort := testenvPort(t)
	both := func(version string) string {
		d := strings.Replace(site(directPort, up, version), "metadata: {name: site}", "metadata: {name: direct}", 1)
		d = strings.Replace(d, "  locations:", "  selector: {matchLabels: {path: direct}}\n  locations:", 1)
		s := strings.Replace(site(port, up, version), "  locations:", "  selector: {matchLabels: {path: relay}}\n  locations:", 1)
		return s + "---\n" + d[strings.Index(d, "---\n")+4:]
	}
	res := h.apply(both("v1"))
	c := h.waitConverged(res.Revision, 10*time.Second)
	id1, id2 := relayID(t, r1), relayID(t, r2)
	killed, survivorID := r1, id2
	if c.ByRelay[id2].Applied == 1 {
		killed, survivorID = r2, id1
	}
	killed.kill()
	waitFor(t, 10*time.Second, "agent moves to the surviving relay", func() bool {
		var ag struct{ Relay string }
		h.mustDo("GET", "/api/v1/workspaces/default/agents/"+a.id, nil, &ag)
		return ag.Relay == survivorID
	})
	res = h.apply(both("v2"))
	c = h.waitConverged(res.Revision, 10*time.Second)
	if c.ByRelay[survivorID].Applied != 1 {
		t.Errorf("convergence = %+v; want the agent applied through %s", c, survivorID)
	}
	waitServed(t, port, "v2", 5*time.Second)

	marks := []int{a.results.count(), direct.results.count()}
	h.stop()
	h.start()
	waitFor(t, 15*time.Second, "the relays and the direct agent reconnect", func() bool {
		var rl struct{ Items []struct{ ID string } }
		h.mustDo("GET", "/api/v1/relays", nil, &rl)
		var ag struct{ Online bool }
		h.mustDo("GET", "/api/v1/workspaces/default/agents/"+direct.id, nil, &ag)
		return len(rl.Items) == 2 && ag.Online // the survivor and the embedded relay
	})
	h.waitConverged(res.Revision, 10*time.Second)
	// A re-apply of the unchanged config would show as a second apply
	// before the one of the next revision.
	res = h.apply(both("v3"))
	h.waitConverged(res.Revision, 10*time.Second)
	waitServed(t, port, "v3", 5*time.Second)
	for i, ag := range []*agentEnv{a, direct} {
		if applies := ag.results.since(marks[i]); len(applies) != 1 {
			t.Errorf("agent %s applied %d times after the hub restart; want once, for the new revision", ag.id, len(applies))
		}
	}
}

// TestDeleteAgentAndRefusedCertificates: deleting an agent cuts its live
// session within 5 s, on the hub and on a relay, and its certificate no
// longer connects; a certificate from a foreign CA, a relay certificate
// used as an agent and an expired certificate are refused.
func TestDeleteAgentAndRefusedCertificates(t *testing.T) {
	clock := &offsetClock{}
	h := startHubWith(t, "", func(c *hub.Config) { c.Clock = clock.Now })
	r := startRelay(t, h)
	onHub, onRelay := enrollAgent(t, h, nil), enrollAgent(t, h, nil)
	connHub := rawHello(t, onHub.dir, h.agentURL())
	connRelay := rawHello(t, onRelay.dir, r.url())

	for _, tc := range []struct {
		a    *agentEnv
		conn *wire.Conn
		url  string
	}{{onHub, connHub, h.agentURL()}, {onRelay, connRelay, r.url()}} {
		start := time.Now()
		if code, _ := h.do("DELETE", "/api/v1/workspaces/default/agents/"+tc.a.id, nil, nil); code != http.StatusNoContent {
			t.Fatalf("delete agent: %d", code)
		}
		if code := closeCode(tc.conn, 5*time.Second); code != wire.CloseRevoked {
			t.Errorf("session of deleted agent on %s: close code %d, want %d (revoked)", tc.url, code, wire.CloseRevoked)
		}
		t.Logf("session on %s cut %v after the delete", tc.url, time.Since(start).Round(time.Millisecond))
		if conn, err := rawDial(t, tc.a.dir, pki.RoleAgent, tc.url); err == nil {
			if conn.Write(&wire.Hello{Protocol: wire.Protocol}, nil) == nil {
				if code := closeCode(conn, 5*time.Second); code != wire.CloseRevoked {
					t.Errorf("deleted agent reconnected to %s (close code %d)", tc.url, code)
				}
			}
		}
	}

	// A relay certificate on the agent endpoint.
	conn, err := rawDial(t, r.dir, pki.RoleRelay, h.agentURL())
	if err != nil {
		t.Fatalf("relay certificate handshake: %v", err)
	}
	_ = conn.Write(&wire.Hello{Protocol: wire.Protocol}, nil)
	if code := closeCode(conn, 5*time.Second); code != wire.CloseUnauthorizedRole {
		t.Errorf("relay certificate as an agent: close code %d, want %d", code, wire.CloseUnauthorizedRole)
	}

	// A certificate from another installation's CA.
	other := startHub(t, "")
	foreign := enrollAgent(t, other, nil)
	if _, err := rawDial(t, foreign.dir, pki.RoleAgent, h.agentURL()); err == nil {
		t.Error("agent certificate of a foreign CA was accepted by the hub")
	}
	if _, err := rawDial(t, foreign.dir, pki.RoleAgent, r.url()); err == nil {
		t.Error("agent certificate of a foreign CA was accepted by the relay")
	}

	// An expired certificate: the hub's clock moves past its 24 h life.
	expired := enrollAgent(t, h, nil)
	rawHello(t, expired.dir, h.agentURL()).CloseNow()
	clock.advance(25 * time.Hour)
	if _, err := rawDial(t, expired.dir, pki.RoleAgent, h.agentURL()); err == nil {
		t.Error("expired agent certificate was accepted by the hub")
	}
}

// TestBadMessagesCloseOnlyThatSession: a malformed, oversized or
// wrong-version message closes that session only; another agent keeps its
// session and still gets the next bundle.
func TestBadMessagesCloseOnlyThatSession(t *testing.T) {
	h := startHub(t, "")
	good := enrollAgent(t, h, nil)
	goodConn := rawHello(t, good.dir, h.agentURL())
	hello, err := wire.Encode(&wire.Hello{Protocol: wire.Protocol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		frame []byte
		code  int
	}{
		{"malformed", []byte{byte(wire.TypeHeartbeat), 5, 'x'}, wire.CloseMalformed},
		{"oversized", append([]byte{byte(wire.TypeHeartbeat)}, make([]byte, wire.LimitHeartbeat+10)...), wire.CloseTooLarge},
	} {
		bad := enrollAgent(t, h, nil)
		ws, err := rawWS(t, bad.dir, pki.RoleAgent, h.agentURL())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range [][]byte{hello, tc.frame} {
			if err := ws.WriteMessage(websocket.BinaryMessage, f); err != nil {
				t.Fatalf("%s: write: %v", tc.name, err)
			}
		}
		if code := closeCode(wire.NewConn(ws, wire.MaxRelayMessage, 30*time.Second), 5*time.Second); code != tc.code {
			t.Errorf("%s: close code %d, want %d", tc.name, code, tc.code)
		}
	}
	wrong := enrollAgent(t, h, nil)
	conn, err := rawDial(t, wrong.dir, pki.RoleAgent, h.agentURL())
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(&wire.Hello{Protocol: wire.Protocol + 1}, nil); err != nil {
		t.Fatal(err)
	}
	if code := closeCode(conn, 5*time.Second); code != wire.CloseProtocolMismatch {
		t.Errorf("wrong version: close code %d, want %d", code, wire.CloseProtocolMismatch)
	}

	// The good session is unaffected: it gets the bundle of a new revision.
	h.apply(site(testenvPort(t), upstream(t, "ok"), "v1"))
	for {
		m, _, err := goodConn.Read(t.Context())
		if err != nil {
			t.Fatalf("good session: %v", err)
		}
		if _, ok := m.(*wire.Bundle); ok {
			break
		}
	}
}

// waitFor polls cond until it holds or within passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", within, what)
		}
		time.Sleep(50 * time.Millisecond) // polling the API
	}
}

// TestTwoHubsOnPostgres: two hubs share a PostgreSQL database. A change
// committed on one reaches an agent whose relay is connected to the other
// (which notices the revision by polling), and the first hub reports the
// agent's ack, which the second wrote.
func TestTwoHubsOnPostgres(t *testing.T) {
	a := startHub(t, testenv.PostgresURL(t))
	b := startPeerHub(t, a)
	r := startRelay(t, a, b.relayURL())
	ag := enrollAgent(t, a, nil)
	ag.run(r.url())
	port := testenvPort(t)
	res := a.apply(site(port, upstream(t, "ok"), "v1"))
	waitServed(t, port, "v1", 10*time.Second)
	c := a.waitConverged(res.Revision, 10*time.Second)
	if c.ByRelay[relayID(t, r)].Applied != 1 {
		t.Errorf("hub a's convergence = %+v; want the agent applied through the relay on hub b", c)
	}
	var relays struct{ Items []struct{ ID, Hub string } }
	a.mustDo("GET", "/api/v1/relays", nil, &relays)
	found := false
	for _, rl := range relays.Items {
		found = found || rl.ID == relayID(t, r)
	}
	if !found {
		t.Errorf("hub a lists relays %+v; want the relay connected to hub b", relays.Items)
	}

	// Deleting an agent on hub a cuts its session on hub b's relay.
	other := enrollAgent(t, a, nil)
	conn := rawHello(t, other.dir, r.url())
	waitFor(t, 10*time.Second, "hub a sees the agent online", func() bool {
		var v struct{ Online bool }
		a.mustDo("GET", "/api/v1/workspaces/default/agents/"+other.id, nil, &v)
		return v.Online
	})
	start := time.Now()
	a.mustDo("DELETE", "/api/v1/workspaces/default/agents/"+other.id, nil, nil)
	if code := closeCode(conn, 5*time.Second); code != wire.CloseRevoked {
		t.Errorf("session on hub b's relay after deletion on hub a: close code %d, want %d", code, wire.CloseRevoked)
	}
	t.Logf("deletion on hub a cut the session on hub b's relay after %v", time.Since(start).Round(time.Millisecond))
}

// TestRelayRestartKeepsAgentsOnline: a relay killed and started again
// (same identity) under 100 agents: once they are back, the hub counts
// every one online. A disconnect of the old session written after the
// new session's status once left agents offline for minutes.
func TestRelayRestartKeepsAgentsOnline(t *testing.T) {
	h := startHub(t, "")
	r := startRelay(t, h)
	const n = 100
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, m := range memAgents(t, h, n, r.url()) {
		wg.Go(func() { _ = m.sess.Run(ctx) })
	}
	online := func() int {
		var list struct{ Items []struct{ Online bool } }
		h.mustDo("GET", "/api/v1/workspaces/default/agents?status=online&limit=1000", nil, &list)
		return len(list.Items)
	}
	waitFor(t, 30*time.Second, "all agents online", func() bool { return online() == n })
	for round := range 3 {
		r.kill()
		r.start()
		waitFor(t, 30*time.Second, fmt.Sprintf("round %d: all agents online again", round), func() bool { return online() == n })
	}
}
