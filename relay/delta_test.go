package relay_test

import (
	"bytes"
	"crypto/rand"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/wire"
)

// twoBundles are a bundle and a small change to it: 32 KiB of shared
// random data and one edited file.
func twoBundles(t *testing.T) (*nginx.Bundle, *nginx.Bundle) {
	t.Helper()
	blob := make([]byte, 32<<10)
	_, _ = rand.Read(blob)
	var out []*nginx.Bundle
	for _, conf := range []string{"# one\n", "# two\n"} {
		b, err := nginx.Seal([]nginx.File{{Path: "nginx.conf", Data: []byte(conf)}, {Path: "blob", Data: blob}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out[0], out[1]
}

// TestDeltaToAgentsThatTakeThem: once the hub sent the delta between two
// bundles, an agent that runs the first and lists bundle-delta gets the
// second as that delta; an agent that does not list it gets the whole
// bundle. Both end up running it.
func TestDeltaToAgentsThatTakeThem(t *testing.T) {
	c := openCA(t, 11)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, nil)
	eventually(t, 10*time.Second, "upstream connected", func() bool { return hub.connected() })
	newer := startDeltaAgent(t, c, r.url)
	older := startMemAgent(t, c, r.url)
	eventually(t, 10*time.Second, "2 agents connected", func() bool { return r.Stats().AgentsConnected == 2 })

	b1, b2 := twoBundles(t)
	hub.addBundle(b1)
	hub.addBundle(b2)
	hub.setDesired(b1.Hash, newer.id, older.id)
	for _, a := range []*memAgent{newer, older} {
		eventually(t, 10*time.Second, a.id+" acks the first bundle", func() bool { return hub.acked(a.id, b1.Hash, wire.ResultApplied) })
	}
	hub.sendDelta(b1, b2)
	hub.setDesired(b2.Hash, newer.id, older.id)
	for _, a := range []*memAgent{newer, older} {
		eventually(t, 10*time.Second, a.id+" acks the second bundle", func() bool { return hub.acked(a.id, b2.Hash, wire.ResultApplied) })
		if a.live() != b2.Hash {
			t.Errorf("agent %s runs %s, want %s", a.id, a.live(), b2.Hash)
		}
	}
	if n := newer.deltas.Load(); n != 1 {
		t.Errorf("the agent that takes deltas applied %d, want 1", n)
	}
	if n := older.deltas.Load(); n != 0 {
		t.Errorf("the agent that does not take deltas applied %d", n)
	}
	st := r.Stats()
	if st.DeltasSent != 1 || st.BundlesSent != 3 {
		t.Errorf("relay sent %d deltas and %d whole bundles, want 1 and 3 (b1 twice, b2 to the older agent)", st.DeltasSent, st.BundlesSent)
	}
}

// TestNeedBundleGetsTheWholeBundle: an agent that cannot apply a delta
// asks for the whole bundle and gets it, once.
func TestNeedBundleGetsTheWholeBundle(t *testing.T) {
	c := openCA(t, 12)
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, nil)
	eventually(t, 10*time.Second, "upstream connected", func() bool { return hub.connected() })
	b1, b2 := twoBundles(t)
	hub.addBundle(b2)
	hub.sendDelta(b1, b2)

	tlsCfg, id := agentTLS(t, c)
	ws, err := rawAgent(t, tlsCfg, r.url)
	if err != nil {
		t.Fatal(err)
	}
	sendFrame(t, ws, &wire.Hello{Protocol: wire.Protocol, AppliedHash: b1.Hash, Capabilities: []string{wire.CapBundleDelta}})
	next := func() (wire.Message, []byte) {
		t.Helper()
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, frame, err := ws.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		m, payload, err := wire.Decode(frame)
		if err != nil {
			t.Fatal(err)
		}
		return m, payload
	}
	if w, _ := next(); w.Type() != wire.TypeWelcome || !bytes.Contains(mustEncode(t, w), []byte(wire.CapBundleDelta)) {
		t.Fatalf("first frame %+v, want a welcome listing %s", w, wire.CapBundleDelta)
	}
	hub.setDesired(b2.Hash, id)
	m, payload := next()
	d, ok := m.(*wire.BundleDelta)
	if !ok || d.Hash != b2.Hash || d.Base != b1.Hash {
		t.Fatalf("got %+v, want the delta from %s to %s", m, b1.Hash, b2.Hash)
	}
	if got, err := nginx.ApplyDelta(b1, payload, d.Hash, nginx.Limits{}); err != nil || got.Hash != b2.Hash {
		t.Fatalf("the delta does not build the bundle: %v", err)
	}
	sendFrame(t, ws, &wire.NeedBundle{Hash: b2.Hash, Reason: "base not kept"})
	m, _ = next()
	if b, ok := m.(*wire.Bundle); !ok || b.Hash != b2.Hash {
		t.Fatalf("got %+v, want the whole bundle %s", m, b2.Hash)
	}
	// Asking again is not answered again: a looping agent gets nothing.
	sendFrame(t, ws, &wire.NeedBundle{Hash: b2.Hash})
	ws.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, frame, err := ws.ReadMessage(); err == nil {
		m, _, _ := wire.Decode(frame)
		t.Fatalf("second NeedBundle answered with %v", m)
	}
}

// TestFanOutHook: a Desired message that gives agents a new bundle tells
// Config.FanOut how many it gives one, bundle data from the hub tells it
// -1, and a message that changes nothing does not call it.
func TestFanOutHook(t *testing.T) {
	c := openCA(t, 15)
	hub := startTestHub(t, c, "hub-1")
	var mu sync.Mutex
	var calls []int
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, func(cfg *relay.Config) {
		cfg.FanOut = func(n int) { mu.Lock(); defer mu.Unlock(); calls = append(calls, n) }
	})
	eventually(t, 10*time.Second, "upstream connected", func() bool { return r.Stats().UpstreamConnected })
	b1, b2 := testBundle(t, "one", 100), testBundle(t, "two", 100)
	hub.addBundle(b1)
	hub.addBundle(b2)
	a1, a2 := startMemAgent(t, c, r.url), startMemAgent(t, c, r.url)
	eventually(t, 10*time.Second, "2 agents connected", func() bool { return r.Stats().AgentsConnected == 2 })

	hub.setDesired(b1.Hash, a1.id, a2.id)
	for _, a := range []*memAgent{a1, a2} {
		eventually(t, 10*time.Second, "ack from "+a.id, func() bool { return hub.acked(a.id, b1.Hash, wire.ResultApplied) })
	}
	hub.setDesired(b1.Hash, a1.id, a2.id) // the same again: no fan-out
	hub.setDesired(b2.Hash, a1.id)        // read after the one before it
	eventually(t, 10*time.Second, "ack of the second bundle", func() bool { return hub.acked(a1.id, b2.Hash, wire.ResultApplied) })
	mu.Lock()
	defer mu.Unlock()
	// Each assignment first, then the bundle it made the relay fetch.
	if !slices.Equal(calls, []int{2, -1, 1, -1}) {
		t.Errorf("FanOut called with %v, want [2 -1 1 -1]", calls)
	}
}
