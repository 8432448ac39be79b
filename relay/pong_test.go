package relay_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/relay"
	"github.com/nxmesh/nxmesh/wire"
)

// stepClock is a relay clock whose Now the test sets; After is real time.
type stepClock struct{ now atomic.Int64 }

func (c *stepClock) Now() time.Time                         { return time.Unix(0, c.now.Load()) }
func (c *stepClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
func (c *stepClock) set(t time.Duration)                    { c.now.Store(int64(t)) }

// TestHeartbeatPong: an agent that lists heartbeat-pong sends no pings and
// gets a pong for a heartbeat when the last one is 1.5 intervals old or
// more (every other heartbeat at the agent's pace, and any late one); an
// agent that does not list it gets pongs only for its pings.
//
// After each heartbeat the agent pings with a numbered payload: the relay
// handles the heartbeat, and writes any pong for it, before it reads the
// ping, so the pongs that arrive before the ping's echo are exactly those
// the heartbeat earned.
func TestHeartbeatPong(t *testing.T) {
	c := openCA(t, 13)
	const interval = time.Second
	clk := &stepClock{}
	r, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) {
		cfg.HeartbeatInterval = interval
		cfg.Clock = clk
	})
	for _, tc := range []struct {
		name string
		caps []string
		// heartbeat times, in intervals after the session started, and
		// the pongs each earns
		at    []float64
		pongs []int
	}{
		{"heartbeat-pong", []string{wire.CapHeartbeatPong},
			[]float64{1, 2, 3, 4, 5.4, 6, 6.4, 10},
			[]int{0, 1, 0, 1, 0, 1, 0, 1}},
		{"pings", nil,
			[]float64{1, 2, 3, 10},
			[]int{0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk.set(0)
			tlsCfg, _ := agentTLS(t, c)
			ws, err := rawAgent(t, tlsCfg, r.url)
			if err != nil {
				t.Fatal(err)
			}
			pongs := make(chan string, 8)
			ws.SetPongHandler(func(data string) error { pongs <- data; return nil })
			welcome := make(chan struct{})
			go func() {
				for first := true; ; first = false {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
					if first {
						close(welcome)
					}
				}
			}()
			sendFrame(t, ws, &wire.Hello{Protocol: wire.Protocol, Capabilities: tc.caps})
			// The session's clock starts when the relay takes the Hello,
			// before it sends the Welcome: only then may time move.
			select {
			case <-welcome:
			case <-time.After(5 * time.Second):
				t.Fatal("no welcome")
			}
			for i, at := range tc.at {
				clk.set(time.Duration(at * float64(interval)))
				sendFrame(t, ws, &wire.Heartbeat{NginxUp: true, Seq: uint64(i + 1)})
				mark := fmt.Sprint(i + 1)
				if err := ws.WriteControl(websocket.PingMessage, []byte(mark), time.Now().Add(time.Second)); err != nil {
					t.Fatal(err)
				}
				got := 0
				for done := false; !done; {
					select {
					case data := <-pongs:
						if data == mark {
							done = true
						} else {
							got++
						}
					case <-time.After(5 * time.Second):
						t.Fatalf("heartbeat %d: no pong for the ping after it", i+1)
					}
				}
				if got != tc.pongs[i] {
					t.Errorf("heartbeat %d at %.1f intervals: %d pongs, want %d", i+1, at, got, tc.pongs[i])
				}
			}
		})
	}
}

// TestSessionLivesOnPongs: an agent session, which sends no pings to a
// relay that answers heartbeats, outlives several read deadlines.
func TestSessionLivesOnPongs(t *testing.T) {
	c := openCA(t, 14)
	// Pongs come every other heartbeat, 2 intervals apart against the
	// agent's deadline of 3: half a second leaves a loaded test machine
	// half a second of slack.
	const interval = 500 * time.Millisecond
	r, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) { cfg.HeartbeatInterval = interval })
	a := startMemAgent(t, c, r.url)
	eventually(t, 10*time.Second, "agent connected", func() bool { return a.connects.Load() == 1 })
	// The agent drops a session silent for 3 intervals, the relay one
	// silent for 3 intervals too: 8 intervals cover both twice.
	time.Sleep(8 * interval)
	if n := a.connects.Load(); n != 1 || r.Stats().AgentsConnected != 1 {
		t.Errorf("after 8 heartbeat intervals: %d sessions established, %d connected; want the first still up", n, r.Stats().AgentsConnected)
	}
}

// TestHeartbeatSkippedAfterApply: an agent that, within the last half
// interval, read a bundle and wrote its applied Result skips that
// heartbeat, and sends the next one. The agent's clock is the test's:
// at 0.6 intervals a push is applied, the beat at 1 is skipped, the beat
// at 2 goes.
func TestHeartbeatSkippedAfterApply(t *testing.T) {
	c := openCA(t, 14)
	const interval = time.Second // startRelay's
	hub := startTestHub(t, c, "hub-1")
	r, _ := startRelay(t, c, t.TempDir(), []string{hub.url}, nil)
	eventually(t, 10*time.Second, "upstream connected", func() bool { return hub.connected() })

	t0 := time.Unix(1_000_000, 0)
	at := func(intervals float64) time.Time { return t0.Add(time.Duration(intervals * float64(interval))) }
	clk := testenv.NewClock(t0)
	moveTo := func(intervals float64) { clk.Advance(at(intervals).Sub(clk.Now())) }
	tlsCfg, id := agentTLS(t, c)
	startAgent(t, tlsCfg, id, false, clk, r.url)
	// The session is up once its heartbeat waits for its first beat.
	eventually(t, 10*time.Second, "session up", func() bool { return clk.WaitingFor(at(1)) })

	push := func(name string) {
		b := testBundle(t, name, 1<<10)
		hub.addBundle(b)
		hub.setDesired(b.Hash, id)
		eventually(t, 10*time.Second, "ack of "+name, func() bool { return hub.acked(id, b.Hash, wire.ResultApplied) })
	}
	moveTo(0.6)
	push("first")
	moveTo(1)
	eventually(t, 10*time.Second, "the beat at 1 handled", func() bool { return clk.WaitingFor(at(2)) })
	moveTo(2)
	eventually(t, 10*time.Second, "the beat at 2 handled", func() bool { return clk.WaitingFor(at(3)) })
	// A result the relay reads after whatever heartbeats were written
	// before it: once it is acked, they are counted.
	push("second")
	if n := r.Stats().HeartbeatsReceived; n != 1 {
		t.Errorf("relay received %d heartbeats, want 1 (the beat at 1 skipped, the one at 2 sent)", n)
	}
}

// TestHeartbeatsOnTheGrid: with an interval of 2 s or more, an agent sends
// each heartbeat on a multiple of 250 ms of its clock, an interval or less
// after the last, so that a relay's agents' heartbeats arrive together.
func TestHeartbeatsOnTheGrid(t *testing.T) {
	c := openCA(t, 15)
	const interval = 4 * time.Second
	r, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) { cfg.HeartbeatInterval = interval })
	clk := testenv.NewClock(time.Unix(1_000_000, int64(100*time.Millisecond)))
	tlsCfg, id := agentTLS(t, c)
	startAgent(t, tlsCfg, id, false, clk, r.url)
	first := time.Unix(1_000_004, 0) // 1,000,004.1 rounded down to 250 ms
	eventually(t, 10*time.Second, "the first beat waited for at "+first.String(), func() bool { return clk.WaitingFor(first) })
	clk.Advance(first.Sub(clk.Now()))
	eventually(t, 10*time.Second, "the first heartbeat", func() bool { return r.Stats().HeartbeatsReceived == 1 })
	// The next goes an interval later, on the grid already.
	next := first.Add(interval)
	eventually(t, 10*time.Second, "the next beat waited for at "+next.String(), func() bool { return clk.WaitingFor(next) })
}

// TestSilentAgentDropped: the relay drops an agent session that sends
// nothing for 3 heartbeat intervals, and not sooner: its watchdog fails
// the session's read as a read deadline would.
func TestSilentAgentDropped(t *testing.T) {
	c := openCA(t, 14)
	const interval = 200 * time.Millisecond
	r, _ := startRelay(t, c, t.TempDir(), nil, func(cfg *relay.Config) { cfg.HeartbeatInterval = interval })
	cfg, _ := agentTLS(t, c)
	conn, _ := hello(t, cfg, r.url, time.Minute)
	defer conn.CloseNow()
	since := time.Now() // the relay's last read began before this
	ctx, cancel := context.WithTimeout(context.Background(), 30*interval)
	defer cancel()
	// The agent stays silent; it reads only to see the relay go.
	for {
		if _, _, err := conn.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("the relay kept a session silent for %v", 30*interval)
			}
			break
		}
	}
	if d := time.Since(since); d < 3*interval-50*time.Millisecond {
		t.Errorf("dropped after %v of silence, before 3 intervals (%v)", d, 3*interval)
	}
	eventually(t, 10*time.Second, "session unregistered", func() bool { return r.Stats().AgentsConnected == 0 })
}
