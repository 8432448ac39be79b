package wire

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// harness is a real TLS WebSocket server on loopback whose accepted
// connections arrive on accepted.
type harness struct {
	srv      *httptest.Server
	accepted chan *websocket.Conn
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{accepted: make(chan *websocket.Conn, 8)}
	up := NewUpgrader()
	h.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade already answered with an HTTP error
		}
		h.accepted <- ws
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// dial opens a client connection and returns it with the matching server
// side, both raw.
func (h *harness) dial(t *testing.T) (client, server *websocket.Conn) {
	t.Helper()
	tlsConfig := h.srv.Client().Transport.(*http.Transport).TLSClientConfig
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client, resp, err := NewDialer(tlsConfig).DialContext(ctx, "wss"+strings.TrimPrefix(h.srv.URL, "https"), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	resp.Body.Close()
	select {
	case server = <-h.accepted:
	case <-ctx.Done():
		t.Fatal("server did not accept")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// pair returns wrapped client (agent) and server (relay) ends.
func (h *harness) pair(t *testing.T, serverPingWait time.Duration) (agent, relay *Conn) {
	t.Helper()
	c, s := h.dial(t)
	return NewConn(c, MaxRelayMessage, 10*time.Second), NewConn(s, MaxAgentMessage, serverPingWait)
}

func mustRead(t *testing.T, c *Conn) (Message, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, p, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	return m, p
}

// wantClose reads from c until it fails and checks the peer's close code.
func wantClose(t *testing.T, c *Conn, code int) *websocket.CloseError {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err := c.Read(ctx)
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != code {
		t.Fatalf("Read = %v, want close code %d", err, code)
	}
	return ce
}

func TestConnSession(t *testing.T) {
	h := newHarness(t)
	agent, relay := h.pair(t, 10*time.Second)

	bundle := bytes.Repeat([]byte("location / { return 200; }\n"), 5000)
	z, err := Compress(bundle)
	if err != nil {
		t.Fatal(err)
	}
	res := &Result{Hash: "h1", State: ResultApplied, DurationMs: 12}
	steps := []struct {
		name     string
		from, to *Conn
		msg      Message
		payload  []byte
	}{
		{"hello", agent, relay, &Hello{Protocol: Protocol, AgentVersion: "v", Capabilities: []string{"a"}}, nil},
		{"welcome", relay, agent, &Welcome{Protocol: Protocol, HeartbeatIntervalMs: 1000, DesiredHash: "h1"}, nil},
		{"bundle", relay, agent, &Bundle{Hash: "h1", Encoding: EncodingGzip, Size: int64(len(bundle))}, z},
		{"result", agent, relay, res, nil},
		{"heartbeat", agent, relay, &Heartbeat{AppliedHash: "h1", NginxUp: true, Seq: 1}, nil},
	}
	for _, st := range steps {
		if err := st.from.Write(st.msg, st.payload); err != nil {
			t.Fatalf("%s: Write: %v", st.name, err)
		}
		m, p := mustRead(t, st.to)
		if !reflect.DeepEqual(m, st.msg) || !bytes.Equal(p, st.payload) {
			t.Fatalf("%s: got %#v (%d payload bytes)", st.name, m, len(p))
		}
		if b, ok := m.(*Bundle); ok {
			got, err := Decompress(p, int(b.Size))
			if err != nil || !bytes.Equal(got, bundle) {
				t.Fatalf("bundle: Decompress: %v", err)
			}
		}
	}

	// A close from another goroutine reaches the peer with code and reason,
	// and ends this side's Read.
	if err := relay.Close(CloseRevoked, ReasonRevoked); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if ce := wantClose(t, agent, CloseRevoked); ce.Text != ReasonRevoked {
		t.Errorf("close reason %q", ce.Text)
	}
	if _, _, err := relay.Read(context.Background()); err == nil {
		t.Fatal("Read after Close succeeded")
	}
}

// TestConnPerTypeLimit: a frame over its type's limit (but under the
// connection limit) closes the session with CloseTooLarge; unknown types and
// text frames with CloseMalformed.
func TestConnProtocolViolations(t *testing.T) {
	tests := []struct {
		name     string
		msgType  int
		frame    []byte
		wantErr  error
		wantCode int
	}{
		{"oversized heartbeat", websocket.BinaryMessage, rawFrame(TypeHeartbeat, `{"appliedHash":"`+strings.Repeat("a", 5<<10)+`"}`, nil), ErrTooLarge, CloseTooLarge},
		{"over connection limit", websocket.BinaryMessage, rawFrame(TypeBundle, `{}`, make([]byte, MaxAgentMessage)), ErrTooLarge, websocket.CloseMessageTooBig},
		{"unknown type", websocket.BinaryMessage, rawFrame(0x7e, `{}`, nil), ErrUnknownType, CloseMalformed},
		{"garbled header", websocket.BinaryMessage, rawFrame(TypeHello, `{"protocol":`, nil), ErrMalformed, CloseMalformed},
		{"text frame", websocket.TextMessage, []byte(`{"protocol":1}`), ErrMalformed, CloseMalformed},
		{"empty frame", websocket.BinaryMessage, nil, ErrMalformed, CloseMalformed},
	}
	h := newHarness(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, s := h.dial(t)
			agent := NewConn(c, MaxRelayMessage, 10*time.Second)
			relay := NewConn(s, MaxAgentMessage, 10*time.Second)
			if err := c.WriteMessage(tc.msgType, tc.frame); err != nil {
				t.Fatal(err)
			}
			// The relay waits for the agent's answer to its close frame, so
			// the agent reads concurrently, as a real peer does.
			relayErr := make(chan error, 1)
			go func() {
				_, _, err := relay.Read(context.Background())
				relayErr <- err
			}()
			wantClose(t, agent, tc.wantCode)
			if err := <-relayErr; !errors.Is(err, tc.wantErr) {
				t.Fatalf("relay Read = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// bounds are the two ways a Conn bounds its reads and writes: a deadline
// on the socket for each, or one watchdog for many Conns.
var bounds = []struct {
	name  string
	watch func(t *testing.T, c *Conn)
}{
	{"deadlines", func(*testing.T, *Conn) {}},
	{"watchdog", func(t *testing.T, c *Conn) {
		w := NewWatchdog(20 * time.Millisecond)
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go w.Run(ctx)
		c.Watch(w)
	}},
}

// TestConnPingTimeout: a peer that never answers pings (it never reads)
// makes Read fail once pingWait passes without a frame.
func TestConnPingTimeout(t *testing.T) {
	for _, b := range bounds {
		t.Run(b.name, func(t *testing.T) {
			h := newHarness(t)
			_, s := h.dial(t) // the client side is never read, so it never pongs
			const pingWait = 200 * time.Millisecond
			relay := NewConn(s, MaxAgentMessage, pingWait)
			b.watch(t, relay)
			if err := relay.Ping(); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			// The context bounds a Read that nothing times out.
			ctx, cancel := context.WithTimeout(context.Background(), 10*pingWait)
			defer cancel()
			start := time.Now()
			_, _, err := relay.Read(ctx)
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("Read = %v, want a deadline error", err)
			}
			if d := time.Since(start); d < pingWait {
				t.Errorf("Read failed after %v, before pingWait %v", d, pingWait)
			}
		})
	}
}

// TestConnPongsKeepAlive: pongs extend the read deadline, so a quiet but
// live peer is not dropped.
func TestConnPongsKeepAlive(t *testing.T) {
	for _, b := range bounds {
		t.Run(b.name, func(t *testing.T) {
			h := newHarness(t)
			agent, relay := h.pair(t, 200*time.Millisecond)
			b.watch(t, relay)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			agentDone := make(chan error, 1)
			go func() { // the agent's reader answers pings
				_, _, err := agent.Read(ctx)
				agentDone <- err
			}()
			relayDone := make(chan error, 1)
			go func() {
				_, _, err := relay.Read(ctx)
				relayDone <- err
			}()
			ticker := time.NewTicker(50 * time.Millisecond)
			defer ticker.Stop()
			quiet := time.After(800 * time.Millisecond) // four times pingWait
			for done := false; !done; {
				select {
				case <-ticker.C:
					if err := relay.Ping(); err != nil {
						t.Fatalf("Ping: %v", err)
					}
				case err := <-relayDone:
					t.Fatalf("relay Read ended while pinging: %v", err)
				case <-quiet:
					done = true
				}
			}
			cancel() // Read returns ctx.Err() and closes the connection
			if err := <-relayDone; !errors.Is(err, context.Canceled) {
				t.Fatalf("relay Read after cancel = %v", err)
			}
			<-agentDone
		})
	}
}

// TestConnWriteTimeout: a write to a peer that stops reading fails once
// the write wait has passed, and not before.
func TestConnWriteTimeout(t *testing.T) {
	for _, b := range bounds {
		t.Run(b.name, func(t *testing.T) {
			h := newHarness(t)
			_, s := h.dial(t) // the client never reads: the socket buffers fill
			relay := NewConn(s, MaxAgentMessage, time.Minute)
			relay.writeWait = 300 * time.Millisecond
			b.watch(t, relay)
			type outcome struct {
				err   error
				after time.Duration // how long the last write took
			}
			done := make(chan outcome, 1)
			go func() {
				payload := make([]byte, 1<<20)
				for range 64 { // far more than loopback buffers hold
					start := time.Now()
					if err := relay.Write(&BundleData{Hash: strings.Repeat("a", 64), Encoding: EncodingGzip, Size: 1}, payload); err != nil {
						done <- outcome{err, time.Since(start)}
						return
					}
				}
				done <- outcome{}
			}()
			select {
			case o := <-done:
				if o.err == nil {
					t.Fatal("64 MiB written to a peer that reads nothing")
				}
				if o.after < relay.writeWait {
					t.Errorf("the stuck write failed after %v, before the write wait %v: %v", o.after, relay.writeWait, o.err)
				}
			case <-time.After(30 * relay.writeWait):
				relay.CloseNow() // frees the writer
				t.Fatalf("a write stuck for %v did not fail", 30*relay.writeWait)
			}
		})
	}
}

// TestWatchdogForgetsClosedConns: a Conn leaves its watchdog when closed,
// however it is closed.
func TestWatchdogForgetsClosedConns(t *testing.T) {
	h := newHarness(t)
	w := NewWatchdog(time.Hour)
	agent, relay := h.pair(t, time.Minute)
	agent.Watch(w)
	relay.Watch(w)
	if n := w.Watching(); n != 2 {
		t.Fatalf("watching %d Conns, want 2", n)
	}
	if err := relay.Close(websocket.CloseGoingAway, "bye"); err != nil {
		t.Fatal(err)
	}
	// The agent reads the close frame and closes; the relay's backstop
	// closes it after CloseWait at the latest.
	if _, _, err := agent.Read(context.Background()); err == nil {
		t.Fatal("agent read on after the relay's close")
	}
	relay.CloseNow()
	if n := w.Watching(); n != 0 {
		t.Fatalf("watching %d Conns after both closed, want 0", n)
	}
}

// TestPreparedFanOut: one PreparedMessage written to three connections
// delivers the identical frame to each.
func TestPreparedFanOut(t *testing.T) {
	h := newHarness(t)
	payload, err := Compress(bytes.Repeat([]byte("upstream u { server 10.0.0.1; }\n"), 2000))
	if err != nil {
		t.Fatal(err)
	}
	msg := &Bundle{Hash: "h2", Encoding: EncodingGzip, Size: 66000}
	want, err := Encode(msg, payload)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := Prepare(msg, payload)
	if err != nil {
		t.Fatal(err)
	}
	var clients []*websocket.Conn
	for range 3 {
		c, s := h.dial(t)
		if err := NewConn(s, MaxAgentMessage, 10*time.Second).WritePrepared(pm); err != nil {
			t.Fatalf("WritePrepared: %v", err)
		}
		clients = append(clients, c)
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		mt, got, err := c.ReadMessage()
		if err != nil || mt != websocket.BinaryMessage {
			t.Fatalf("client %d: ReadMessage = %d, %v", i, mt, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("client %d: frame differs from Encode output", i)
		}
	}
}

func TestConnReadCanceled(t *testing.T) {
	h := newHarness(t)
	_, relay := h.pair(t, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := relay.Read(ctx)
		done <- err
	}()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read = %v, want context.Canceled", err)
	}
}
