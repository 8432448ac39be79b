package relay

import (
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestQueuedConnectionExpires: a connection that waited for a handshake
// slot longer than maxQueueWait is closed unserved, and the next one is
// served.
func TestQueuedConnectionExpires(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		now     = time.Unix(1000, 0)
		expired atomic.Int64
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := newHandshakeLimiter(ln, 1, clock, nil, &expired)
	defer l.Close()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dial()          // takes the only slot
	stale := dial() // waits for it
	first, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// Until the accept loop has queued stale, it is not known to wait.
	for len(l.queued) == 0 {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	now = now.Add(maxQueueWait + time.Second)
	mu.Unlock()
	fresh := dial()
	l.connState(first, http.StateClosed) // the slot is free again
	got, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if got.RemoteAddr().String() != fresh.LocalAddr().String() {
		t.Fatalf("served %s, want the fresh connection %s", got.RemoteAddr(), fresh.LocalAddr())
	}
	if n := expired.Load(); n != 1 {
		t.Fatalf("expired %d connections, want 1", n)
	}
	stale.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stale.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("the stale connection is not closed: %v", err)
	}
}
