package relay_test

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/wire"
)

// TestHeartbeatPong: an agent that lists heartbeat-pong gets a pong for
// every heartbeat without pinging; one that does not gets pongs only for
// its pings.
func TestHeartbeatPong(t *testing.T) {
	c := openCA(t, 13)
	r, _ := startRelay(t, c, t.TempDir(), nil, nil)
	for _, tc := range []struct {
		name string
		caps []string
	}{{"heartbeat-pong", []string{wire.CapHeartbeatPong}}, {"pings", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			tlsCfg, _ := agentTLS(t, c)
			ws, err := rawAgent(t, tlsCfg, r.url)
			if err != nil {
				t.Fatal(err)
			}
			pongs := make(chan struct{}, 8)
			ws.SetPongHandler(func(string) error { pongs <- struct{}{}; return nil })
			go func() {
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
				}
			}()
			sendFrame(t, ws, &wire.Hello{Protocol: wire.Protocol, Capabilities: tc.caps})
			sendFrame(t, ws, &wire.Heartbeat{NginxUp: true, Seq: 1})
			select {
			case <-pongs:
				if tc.caps == nil {
					t.Fatal("a heartbeat was answered with a pong to an agent that pings")
				}
			case <-time.After(500 * time.Millisecond):
				if tc.caps != nil {
					t.Fatal("no pong for a heartbeat within 500 ms")
				}
			}
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-pongs:
			case <-time.After(5 * time.Second):
				t.Fatal("no pong for a ping")
			}
		})
	}
}

// TestSessionLivesOnPongs: an agent session, which sends no pings to a
// relay that answers heartbeats, outlives several read deadlines.
func TestSessionLivesOnPongs(t *testing.T) {
	c := openCA(t, 14)
	const interval = 200 * time.Millisecond
	r, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) { cfg.HeartbeatInterval = interval })
	a := startMemAgent(t, c, r.url)
	eventually(t, 10*time.Second, "agent connected", func() bool { return a.connects.Load() == 1 })
	// The agent drops a session silent for 3 intervals, the relay one
	// silent for 3 intervals too: 10 intervals cover both three times.
	time.Sleep(10 * interval)
	if n := a.connects.Load(); n != 1 || r.Stats().AgentsConnected != 1 {
		t.Errorf("after 10 heartbeat intervals: %d sessions established, %d connected; want the first still up", n, r.Stats().AgentsConnected)
	}
}
