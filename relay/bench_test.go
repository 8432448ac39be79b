package relay_test

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/wire"
)

// BenchmarkHeartbeat measures what an idle fleet costs a relay: one
// agent's heartbeat over mTLS on loopback, answered with a pong, either
// unasked (heartbeat-pong, what agents do; the relay's clock moves two
// intervals per heartbeat so that each earns one, where agents get one
// every second heartbeat) or to the ping the agent sends after it (agents
// without the capability). The agent side is a bare WebSocket, so
// allocations are mostly the relay's (see -memprofile).
func BenchmarkHeartbeat(b *testing.B) {
	c := openCA(b, 21)
	clk := &stepClock{}
	r, _ := startRelay(b, c, b.TempDir(), nil, func(cfg *relay.Config) { cfg.Clock = clk })
	for _, mode := range []struct {
		name string
		caps []string
	}{{"heartbeat-pong", []string{wire.CapHeartbeatPong}}, {"ping", nil}} {
		b.Run(mode.name, func(b *testing.B) {
			tlsCfg, _ := agentTLS(b, c)
			ws, _, err := wire.NewDialer(tlsCfg).Dial(r.url, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer ws.Close()
			pong := make(chan struct{}, 1)
			ws.SetPongHandler(func(string) error { pong <- struct{}{}; return nil })
			send := func(m wire.Message) {
				frame, err := wire.Encode(m, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
					b.Fatal(err)
				}
			}
			hash := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			send(&wire.Hello{Protocol: wire.Protocol, AppliedHash: hash, Capabilities: mode.caps})
			// The relay starts the session's pong clock when it takes the
			// Hello: the loop below moves the clock only after the Welcome,
			// or the first heartbeat may find its pong not yet due.
			if _, _, err := ws.ReadMessage(); err != nil {
				b.Fatal(err)
			}
			go func() {
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
				}
			}()
			hb := &wire.Heartbeat{AppliedHash: hash, NginxUp: true}
			b.ReportAllocs()
			for b.Loop() {
				clk.now.Add(int64(2 * time.Second)) // two of startRelay's intervals
				hb.Seq++
				send(hb)
				if mode.caps == nil {
					if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
						b.Fatal(err)
					}
				}
				<-pong
			}
		})
	}
}
