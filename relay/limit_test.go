package relay_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/relay"
)

// TestHandshakeLimit: with every handshake slot held by connections that
// never finish their handshake, no agent gets in; once they go, agents
// connect. Many agents connect through a single slot, one at a time.
func TestHandshakeLimit(t *testing.T) {
	c := openCA(t, 1)
	r, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) { cfg.MaxHandshakes = 2 })
	addr := strings.TrimSuffix(strings.TrimPrefix(r.url, "wss://"), "/v1/agent")
	var idle []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, conn)
	}
	a := startMemAgent(t, c, r.url)
	// The agent's dial is queued behind the two silent connections: it
	// cannot have a session while they hold the slots.
	time.Sleep(300 * time.Millisecond) // let the agent try; nothing may connect
	if n := r.Stats().AgentsConnected; n != 0 {
		t.Fatalf("%d agents connected while every handshake slot was held", n)
	}
	for _, conn := range idle {
		conn.Close()
	}
	eventually(t, 10*time.Second, "agent connects once the slots are free", func() bool { return r.Stats().AgentsConnected == 1 })
	_ = a

	r1, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) { cfg.MaxHandshakes = 1 })
	for range 20 {
		startMemAgent(t, c, r1.url)
	}
	eventually(t, 20*time.Second, "20 agents through one slot", func() bool { return r1.Stats().AgentsConnected == 20 })
	if got := r1.Stats().SessionsStarted; got != 20 {
		t.Errorf("SessionsStarted = %d, want 20", got)
	}
}

// TestAcceptQueue: connections beyond the handshake slots are accepted at
// once and wait in the relay, not in the kernel's listen backlog, whose
// overflow would drop SYNs and cost clients seconds of TCP retransmission.
func TestAcceptQueue(t *testing.T) {
	c := openCA(t, 1)
	r, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) { cfg.MaxHandshakes = 1 })
	addr := strings.TrimSuffix(strings.TrimPrefix(r.url, "wss://"), "/v1/agent")
	const n = 50
	for range n {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
	}
	// One silent connection holds the only slot; all are accepted anyway.
	eventually(t, 10*time.Second, "every connection accepted", func() bool { return r.Stats().Accepted == n })
	if got := r.Stats().AgentsConnected; got != 0 {
		t.Fatalf("%d agents connected", got)
	}
}
