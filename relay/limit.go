package relay

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nxmesh/nxmesh/wire"
)

// handshakeLimiter lets at most cap(slots) accepted connections be between
// accept and the end of their TLS handshake and upgrade request, so that a
// reconnect storm does not run ten thousand handshakes at once: each would
// then take seconds of shared CPU, and many would hit the client's
// handshake timeout and start over.
//
// Connections are taken from the kernel as fast as they come, by a
// goroutine of their own, and wait for a slot in a queue here (at most
// maxQueued; beyond it they wait in the kernel's listen backlog). The
// backlog alone was too small: at somaxconn (4096 by default) a storm
// overflowed it, and every dropped SYN cost its agent a one-second (then
// three-, then seven-second) TCP retransmission, while the relay sat
// idle. A queued connection costs a file descriptor and the kernel's
// buffer of its ClientHello, nothing more.
//
// A slot is given back when the connection's first request has been read
// (the handshake is done), or when it is hijacked or closed; net/http
// reports these through http.Server.ConnState.
type handshakeLimiter struct {
	net.Listener
	slots  chan struct{}
	queued chan acceptResult
	done   chan struct{}
	once   sync.Once
	// loopDone is closed when acceptLoop has returned.
	loopDone chan struct{}
	accepted *atomic.Int64 // counts accepted connections; may be nil
	expired  *atomic.Int64 // counts those closed after maxQueueWait; may be nil
	now      func() time.Time

	mu      sync.Mutex // guards holding
	holding map[net.Conn]bool
}

// acceptResult is one result of the real listener's Accept.
type acceptResult struct {
	c   net.Conn
	err error
	at  time.Time // when it was accepted
}

// maxQueued bounds the connections accepted and waiting for a slot.
const maxQueued = 16384

// maxQueueWait is how long a connection may wait for a slot. One that
// waited longer is closed unserved: its client gives up HandshakeTimeout
// after it dialed, and the handshake needs time of its own (up to
// AcceptTimeout). Serving it anyway would spend a handshake on a client
// that has left, while its next dial waits behind it: under a storm
// larger than the relay can serve in time, the queue would hold only
// the dead (seen at 50,000 agents connecting at once over 3 relays).
// Closed, the client retries after its backoff, which spreads the storm.
const maxQueueWait = wire.HandshakeTimeout - wire.AcceptTimeout

// newHandshakeLimiter wraps ln with n handshake slots, telling time with
// now; accepted and expired, when not nil, count accepted connections and
// those that waited too long.
func newHandshakeLimiter(ln net.Listener, n int, now func() time.Time, accepted, expired *atomic.Int64) *handshakeLimiter {
	l := &handshakeLimiter{
		Listener: ln,
		now:      now,
		accepted: accepted,
		expired:  expired,
		slots:    make(chan struct{}, n),
		queued:   make(chan acceptResult, maxQueued),
		done:     make(chan struct{}),
		loopDone: make(chan struct{}),
		holding:  map[net.Conn]bool{},
	}
	go l.acceptLoop()
	return l
}

// acceptLoop moves connections from the kernel into the queue until the
// listener fails for good, which it queues for Accept to return. After a
// temporary failure (out of file descriptors) it waits and tries again, as
// http.Server does: 5 ms, doubling up to a second.
func (l *handshakeLimiter) acceptLoop() {
	defer close(l.loopDone)
	var wait time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil && !errors.Is(err, net.ErrClosed) && isTemporary(err) {
			wait = min(max(2*wait, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(wait):
				continue
			case <-l.done:
				return
			}
		}
		wait = 0
		if err == nil && l.accepted != nil {
			l.accepted.Add(1)
		}
		select {
		case l.queued <- acceptResult{c, err, l.now()}:
		case <-l.done:
			if c != nil {
				c.Close()
			}
			return
		}
		if err != nil {
			return
		}
	}
}

// isTemporary reports an accept error worth retrying.
func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// Accept waits for a slot, then for a connection.
func (l *handshakeLimiter) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	var a acceptResult
	for {
		select {
		case a = <-l.queued:
		case <-l.done:
			<-l.slots
			return nil, net.ErrClosed
		}
		if a.c == nil || l.now().Sub(a.at) <= maxQueueWait {
			break
		}
		a.c.Close()
		if l.expired != nil {
			l.expired.Add(1)
		}
	}
	if a.err != nil {
		<-l.slots
		return nil, a.err
	}
	l.mu.Lock()
	l.holding[a.c] = true
	l.mu.Unlock()
	return a.c, nil
}

// Close stops Accept, also one waiting for a slot, and closes the
// connections still queued.
func (l *handshakeLimiter) Close() error {
	l.once.Do(func() { close(l.done) })
	err := l.Listener.Close()
	<-l.loopDone
	for {
		select {
		case a := <-l.queued:
			if a.c != nil {
				a.c.Close()
			}
		default:
			return err
		}
	}
}

// connState is the http.Server.ConnState hook that gives slots back.
func (l *handshakeLimiter) connState(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateActive, http.StateHijacked, http.StateClosed:
	default:
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holding[c] {
		delete(l.holding, c)
		<-l.slots
	}
}
