package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Close codes (RFC 6455 private range 4000-4999) and their reasons. A peer
// receiving one of these must not reconnect in a tight loop: 4001, 4004 and
// 4007 will not heal by retrying, the others are worth a backoff retry.
const (
	// CloseProtocolMismatch: the peers speak different Protocol versions;
	// the reason (ProtocolMismatchReason) names both.
	CloseProtocolMismatch = 4001
	// CloseMalformed: a frame could not be decoded, had an unknown type or
	// was a text frame.
	CloseMalformed = 4002
	// CloseTooLarge: a frame exceeded its type's limit.
	CloseTooLarge = 4003
	// CloseRevoked: the peer's certificate was revoked.
	CloseRevoked = 4004
	// CloseSlowConsumer: the peer did not keep up with what it was sent.
	CloseSlowConsumer = 4005
	// CloseSuperseded: a newer session of the same agent replaced this one.
	CloseSuperseded = 4006
	// CloseUnauthorizedRole: the certificate's role may not use this
	// endpoint (e.g. an agent certificate on the hub's relay endpoint).
	CloseUnauthorizedRole = 4007
)

// Reasons sent with the close codes above.
const (
	ReasonMalformed        = "malformed message"
	ReasonUnknownType      = "unknown message type"
	ReasonTooLarge         = "message too large"
	ReasonRevoked          = "certificate revoked"
	ReasonSlowConsumer     = "slow consumer"
	ReasonSuperseded       = "superseded by a newer session of the same agent"
	ReasonUnauthorizedRole = "unauthorized role"
)

// maxCloseReason is the most reason bytes a close frame holds: control frame
// payloads are at most 125 bytes, two of which are the code.
const maxCloseReason = 123

// Timeouts of Conn.
const (
	// DefaultWriteWait bounds every write; a peer that does not accept a
	// frame within it is a slow consumer and its connection is dead.
	DefaultWriteWait = 10 * time.Second
	// CloseWait is how long closing waits for the peer's close frame.
	CloseWait = time.Second
	// AcceptTimeout bounds the server's side of an opening handshake, from
	// accept to the upgrade request read: TLS and the HTTP request.
	AcceptTimeout = 10 * time.Second
	// DialTimeout bounds the TCP connect of a dial: a peer that is down or
	// unreachable is given up this fast, and the client fails over.
	DialTimeout = 10 * time.Second
	// HandshakeTimeout bounds a whole dial, TCP connect to upgraded
	// WebSocket. It is longer than AcceptTimeout on purpose: a live relay
	// under a reconnect storm takes connections at the pace of its
	// handshake limit, and the others wait in its listen backlog. A client
	// that gave up there would lose its place, and with it its TLS session
	// ticket (crypto/tls drops a ticket whose handshake failed), and come
	// back later for a full handshake: more work for the same relay.
	HandshakeTimeout = 30 * time.Second
	// bufferSize is the read and write buffer size of dialed connections:
	// small, because fleets hold tens of thousands of mostly idle ones.
	bufferSize = 4 << 10
	// serverReadBufferSize is the read buffer of accepted connections,
	// smaller still: a relay holds one per agent, it lives as long as the
	// session, and nearly everything an agent sends (a heartbeat and a
	// ping, about 120 bytes) fits; larger frames take more reads of it,
	// from what crypto/tls has already decrypted.
	serverReadBufferSize = 256
	// firstFrameBuffer is the buffer a frame is first read into.
	firstFrameBuffer = 512
)

// ProtocolMismatchReason is the close reason for CloseProtocolMismatch,
// naming both versions so an operator knows which side to upgrade.
func ProtocolMismatchReason(ours, theirs int) string {
	return fmt.Sprintf("protocol mismatch: we speak %d, peer speaks %d", ours, theirs)
}

// CloseMessage formats a close frame payload, truncating reason on a UTF-8
// boundary to the 123 bytes a control frame can carry.
func CloseMessage(code int, reason string) []byte {
	return websocket.FormatCloseMessage(code, truncateUTF8(reason, maxCloseReason))
}

// CloseCodeFor maps an error from Decode or Conn.Read to the close code and
// reason to send; ok is false for errors that are not protocol violations
// (I/O errors, timeouts), where there is no one left to tell.
func CloseCodeFor(err error) (code int, reason string, ok bool) {
	switch {
	case errors.Is(err, ErrTooLarge):
		return CloseTooLarge, ReasonTooLarge, true
	case errors.Is(err, ErrUnknownType):
		return CloseMalformed, ReasonUnknownType, true
	case errors.Is(err, ErrMalformed):
		return CloseMalformed, ReasonMalformed, true
	}
	return 0, "", false
}

// writeBufferPool is shared by every connection made through NewUpgrader and
// NewDialer: a connection holds a write buffer only while writing, so 50k
// idle connections do not pin 50k buffers. It is safe for concurrent use.
var writeBufferPool = &sync.Pool{}

// NewUpgrader returns the server-side upgrader for wire endpoints:
// compression off (read limits must count wire bytes), small read buffers
// and the shared write buffer pool. TLS and client certificates are the
// HTTP server's job.
func NewUpgrader() websocket.Upgrader {
	return websocket.Upgrader{
		HandshakeTimeout:  AcceptTimeout,
		ReadBufferSize:    serverReadBufferSize,
		WriteBufferSize:   bufferSize,
		WriteBufferPool:   writeBufferPool,
		EnableCompression: false,
	}
}

// NewDialer returns the client-side dialer for wire endpoints with the same
// settings as NewUpgrader; tlsConfig carries the client certificate and the
// roots (TLS 1.3 is the caller's setting).
func NewDialer(tlsConfig *tls.Config) *websocket.Dialer {
	return &websocket.Dialer{
		NetDialContext:    DialWithTimeout(nil),
		TLSClientConfig:   tlsConfig,
		HandshakeTimeout:  HandshakeTimeout,
		ReadBufferSize:    bufferSize,
		WriteBufferSize:   bufferSize,
		WriteBufferPool:   writeBufferPool,
		EnableCompression: false,
	}
}

// DialFunc opens a TCP connection, as net.Dialer.DialContext does.
type DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// DialWithTimeout bounds dial (default a net.Dialer) by DialTimeout, so
// that the long HandshakeTimeout of a dial does not also apply to a TCP
// connect that is not answered.
func DialWithTimeout(dial DialFunc) DialFunc {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, DialTimeout)
		defer cancel()
		return dial(ctx, network, addr)
	}
}

// Prepare builds the frame for m and payload once as a PreparedMessage, so
// a bundle is framed once and written to many connections with
// Conn.WritePrepared.
func Prepare(m Message, payload []byte) (*websocket.PreparedMessage, error) {
	frame, err := Encode(m, payload)
	if err != nil {
		return nil, err
	}
	pm, err := websocket.NewPreparedMessage(websocket.BinaryMessage, frame)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", m.Type(), err)
	}
	return pm, nil
}

// Conn is a wire session over a WebSocket. One goroutine owns reading (calls
// Read in a loop); any goroutine may write, and writes are serialized by a
// mutex rather than a writer goroutine, because fleets hold 50k connections
// and a goroutine per connection per direction is memory we do not spend.
// The owner of the Conn pings it periodically (e.g. one ticker for all
// connections, every pingWait/2) with Ping.
type Conn struct {
	ws        *websocket.Conn
	readLimit int
	pingWait  time.Duration
	writeWait time.Duration

	// closing is set once a close frame was sent; the read deadline is then
	// no longer extended by pings and pongs.
	closing   atomic.Bool
	closeOnce sync.Once

	// writeMu serializes data frame writes: gorilla allows one concurrent
	// writer. Control frames (ping, close) need no lock.
	writeMu sync.Mutex

	// dog, when set (Watch), bounds reads and writes in place of socket
	// deadlines: readAt is the coarse time the last frame was awaited or
	// a ping or pong came, writeAt the time the write in progress began
	// (0 when none).
	dog     *Watchdog
	readAt  atomic.Int64
	writeAt atomic.Int64
}

// NewConn wraps ws. readLimit caps any one frame (MaxAgentMessage,
// MaxRelayMessage, MaxHubMessage); per-type limits apply within it. A Read
// fails if nothing, not even a ping or pong, arrives for pingWait.
func NewConn(ws *websocket.Conn, readLimit int64, pingWait time.Duration) *Conn {
	c := &Conn{ws: ws, readLimit: int(readLimit), pingWait: pingWait, writeWait: DefaultWriteWait}
	// gorilla refuses a frame over readLimit as soon as its header arrives
	// (closing with 1009); Read also applies min(readLimit, Limit(type)) so
	// that every other oversize closes with CloseTooLarge.
	ws.SetReadLimit(readLimit)
	ws.SetPongHandler(func(string) error {
		c.extendReadDeadline()
		return nil
	})
	ws.SetPingHandler(func(data string) error {
		c.extendReadDeadline()
		// The handler runs deep in the reading goroutine (gorilla, then
		// crypto/tls); a TLS write from there would double that
		// goroutine's stack for the rest of its life (see Read). The pong
		// goes from a goroutine of its own instead; gorilla allows control
		// frames concurrently with everything else.
		go c.pong(data)
		return nil
	})
	return c
}

// pong answers a ping; a pong that cannot be written breaks the
// connection, and the next Read fails.
func (c *Conn) pong(data string) {
	err := c.writeControl(websocket.PongMessage, []byte(data))
	if err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		c.CloseNow()
	}
}

// writeControl writes a ping or pong the way data frames go, in turn with
// them and through the pooled write buffer. gorilla's WriteControl, which
// may run beside a data write, allocates a frame buffer and a timer on
// every call: a relay answering 50,000 agents' pings made more garbage
// with it than with everything else its idle sessions do.
func (c *Conn) writeControl(messageType int, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.beginWrite()
	defer c.endWrite()
	return c.ws.WriteMessage(messageType, data)
}

// beginWrite bounds the write about to start, under writeMu, by the
// write wait: a deadline on the socket, or a stamp the watchdog checks.
// endWrite marks it done.
func (c *Conn) beginWrite() {
	if c.dog != nil {
		c.writeAt.Store(c.dog.now.Load())
		return
	}
	_ = c.ws.SetWriteDeadline(time.Now().Add(c.writeWait))
}

func (c *Conn) endWrite() {
	if c.dog != nil {
		c.writeAt.Store(0)
	}
}

// extendReadDeadline pushes the read deadline pingWait into the future: any
// frame from the peer, control frames included, proves it is alive.
func (c *Conn) extendReadDeadline() {
	switch {
	case c.closing.Load():
	case c.dog != nil:
		c.readAt.Store(c.dog.now.Load())
	default:
		_ = c.ws.SetReadDeadline(time.Now().Add(c.pingWait))
	}
}

// Read returns the next message and its payload (nil unless Bundle or
// BundleData). It fails with ErrTimeout when nothing arrives for pingWait,
// and when ctx is done
// (then the connection is closed and ctx.Err() returned).
//
// The per-type limit is enforced while reading: after the type byte, at most
// Limit(type) bytes are read, so an oversized Heartbeat costs 4 KiB, not the
// connection limit. On a protocol violation (unknown type, oversize,
// malformed frame, text frame) Read sends the matching close code, waits
// briefly for the peer's close and closes the connection. After any error
// the Conn is closed and unusable.
//
// Read keeps its stack shallow: a relay holds one goroutine per agent,
// parked in Read, and Go keeps a goroutine's stack at the largest size it
// ever needed until it uses under a quarter of it. So the frame is read by
// readFrame, deep in gorilla and crypto/tls, and decoded once readFrame
// has returned, and the error path is a call of its own.
func (c *Conn) Read(ctx context.Context) (Message, []byte, error) {
	if err := ctx.Err(); err != nil {
		c.CloseNow()
		return nil, nil, err
	}
	// A context that cannot end (a relay's sessions, which it closes
	// itself) costs nothing; any other is watched while the read waits.
	stop := func() bool { return false }
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.CloseNow)
	}
	frame, err := c.readFrame()
	if err == nil {
		stop()
		m, payload, err := Decode(frame)
		if !HasPayload(Type(frame[0])) {
			// Nothing decoded aliases a frame without payload.
			putFrame(frame)
		}
		if err == nil {
			return m, payload, nil
		}
		return nil, nil, c.readFailed(ctx, err)
	}
	err = c.readFailed(ctx, err)
	stop()
	return nil, nil, err
}

// readFailed closes the connection after a failed Read, with the close
// code the error calls for, and returns the error Read reports.
//
//go:noinline
func (c *Conn) readFailed(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		c.CloseNow()
		return ctxErr
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		// gorilla hides the net error's chain; give callers a sentinel.
		err = fmt.Errorf("read (silent for %v): %w: %w", c.pingWait, ErrTimeout, err)
	}
	if code, reason, ok := CloseCodeFor(err); ok {
		c.closeAndDrain(code, reason)
	}
	c.CloseNow()
	return err
}

// readFrame reads one frame, enforcing the per-type limit.
func (c *Conn) readFrame() ([]byte, error) {
	c.extendReadDeadline()
	mt, r, err := c.ws.NextReader()
	if errors.Is(err, websocket.ErrReadLimit) {
		return nil, fmt.Errorf("read: over connection limit %d: %w: %w", c.readLimit, ErrTooLarge, err)
	}
	if err != nil {
		return nil, err
	}
	if mt != websocket.BinaryMessage {
		return nil, fmt.Errorf("read: text frame: %w", ErrMalformed)
	}
	// Most frames are heartbeats of about a hundred bytes: start with a
	// small pooled buffer, readBounded doubles it for the rare large one.
	// The type byte is read into it too: a byte array of its own would
	// escape through the io.Reader, an allocation per frame.
	frame := getFrame()[:1]
	if _, err := io.ReadFull(r, frame); err != nil {
		putFrame(frame)
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read: empty frame: %w", ErrMalformed)
		}
		return nil, err
	}
	t := Type(frame[0])
	limit := Limit(t)
	if limit == 0 {
		putFrame(frame)
		return nil, fmt.Errorf("read %s: %w", t, ErrUnknownType)
	}
	if c.readLimit > 0 {
		limit = min(limit, c.readLimit)
	}
	if limit < cap(frame) {
		frame = frame[:1:limit]
	}
	frame, err = readBounded(r, frame, limit)
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			err = fmt.Errorf("%w: %w", ErrTooLarge, err)
		}
		if errors.Is(err, ErrTooLarge) {
			return nil, fmt.Errorf("read %s: over %d bytes: %w", t, limit, err)
		}
		return nil, err
	}
	return frame, nil
}

// closeAndDrain sends a close frame and, as the reading goroutine, reads
// until the peer's close frame (or CloseWait) so that closing the socket
// with unread data does not reset the connection before the peer has read
// our close frame.
func (c *Conn) closeAndDrain(code int, reason string) {
	c.closing.Store(true)
	_ = c.ws.WriteControl(websocket.CloseMessage, CloseMessage(code, reason), time.Now().Add(CloseWait))
	_ = c.ws.SetReadDeadline(time.Now().Add(CloseWait))
	for {
		if _, _, err := c.ws.NextReader(); err != nil {
			return
		}
	}
}

// CloseAndWait sends a close frame with code and reason, reads until the
// peer answers (at most CloseWait) and closes the connection. Only the
// goroutine that reads may call it, in place of further Reads.
func (c *Conn) CloseAndWait(code int, reason string) {
	c.closeAndDrain(code, reason)
	c.CloseNow()
}

// Write sends m with payload, waiting at most the write deadline
// (DefaultWriteWait). A write that times out leaves the connection broken:
// the caller closes it (the peer is a slow consumer).
func (c *Conn) Write(m Message, payload []byte) error {
	// Small frames are built in a pooled buffer: WriteMessage copies the
	// frame out before it returns.
	frame, err := appendFrame(getFrame(), m, payload)
	if err != nil {
		putFrame(frame)
		return err
	}
	defer putFrame(frame)
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.beginWrite()
	defer c.endWrite()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
		return fmt.Errorf("write %s: %w", m.Type(), err)
	}
	return nil
}

// WritePrepared sends a frame built by Prepare, with the same deadline as
// Write.
func (c *Conn) WritePrepared(pm *websocket.PreparedMessage) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.beginWrite()
	defer c.endWrite()
	if err := c.ws.WritePreparedMessage(pm); err != nil {
		return fmt.Errorf("write prepared: %w", err)
	}
	return nil
}

// Ping sends a ping; the peer's pong extends this side's read deadline. Safe
// from any goroutine; it waits for a data write in progress.
func (c *Conn) Ping() error {
	return c.writeControl(websocket.PingMessage, nil)
}

// Pong sends an unsolicited pong (RFC 6455 allows one as a one-way
// heartbeat); it extends the peer's read deadline like an answer to its
// ping. Safe from any goroutine; it waits for a data write in progress.
func (c *Conn) Pong() error {
	return c.writeControl(websocket.PongMessage, nil)
}

// Close sends a close frame with code and reason (truncated to fit) and
// closes the connection once the reading goroutine sees the peer's answer,
// or after CloseWait at the latest. Safe from any goroutine; a Read in
// progress returns an error.
func (c *Conn) Close(code int, reason string) error {
	c.closing.Store(true)
	err := c.ws.WriteControl(websocket.CloseMessage, CloseMessage(code, reason), time.Now().Add(CloseWait))
	if err != nil {
		c.CloseNow()
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return fmt.Errorf("close %d: %w", code, err)
	}
	// Let the reader receive the peer's close frame; the timer is the
	// backstop when no Read is in progress.
	_ = c.ws.SetReadDeadline(time.Now().Add(CloseWait))
	time.AfterFunc(CloseWait, c.CloseNow)
	return nil
}

// CloseNow closes the underlying connection without a close frame. Safe
// from any goroutine and more than once.
func (c *Conn) CloseNow() {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		_ = c.ws.Close()
		if c.dog != nil {
			c.dog.remove(c)
		}
	})
}

// frames pools the buffers small frames are read into and built in: Read
// returns a frame without payload to it once decoded (decoding copies
// what it keeps), and Write once written, so an idle session's heartbeats
// make no garbage there.
var frames = sync.Pool{New: func() any { return new([firstFrameBuffer]byte) }}

func getFrame() []byte { return frames.Get().(*[firstFrameBuffer]byte)[:0] }

// putFrame keeps frame for reuse if it is of the pooled size.
func putFrame(frame []byte) {
	if cap(frame) == firstFrameBuffer {
		frames.Put((*[firstFrameBuffer]byte)(frame[:firstFrameBuffer]))
	}
}
