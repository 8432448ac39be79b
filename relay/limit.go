package relay

import (
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// handshakeLimiter lets at most cap(slots) accepted connections be between
// accept and the end of their TLS handshake and upgrade request. Accept
// waits for a free slot, so a reconnect storm queues in the kernel's listen
// backlog, where waiting costs nothing, instead of running ten thousand
// handshakes at once: each would then take seconds of shared CPU, and many
// would hit the client's handshake timeout and start over.
//
// A slot is given back when the connection's first request has been read
// (the handshake is done), or when it is hijacked or closed; net/http
// reports these through http.Server.ConnState.
type handshakeLimiter struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
	// accepted, when set, counts accepted connections.
	accepted *atomic.Int64

	mu      sync.Mutex // guards holding
	holding map[net.Conn]bool
}

func newHandshakeLimiter(ln net.Listener, n int) *handshakeLimiter {
	return &handshakeLimiter{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{}), holding: map[net.Conn]bool{}}
}

// Accept waits for a slot, then for a connection.
func (l *handshakeLimiter) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	l.mu.Lock()
	l.holding[c] = true
	l.mu.Unlock()
	if l.accepted != nil {
		l.accepted.Add(1)
	}
	return c, nil
}

// Close stops Accept, also one waiting for a slot.
func (l *handshakeLimiter) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
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
