package wire

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Watchdog bounds the silence and the writes of many Conns from one
// goroutine, in place of a deadline set on the socket for every frame.
//
// A socket deadline is a runtime timer: every frame read or written moved
// one in a heap of twice as many timers as the process holds connections,
// and every write left one armed, to fire writeWait later. In a
// 50,000-agent push that was about a twentieth of the relays' and the
// simulated agents' CPU. A watched Conn stamps a coarse clock instead (an
// atomic store), and on every tick the watchdog
//   - fails the Read of a Conn that has heard nothing for longer than its
//     pingWait, by setting its read deadline in the past, so Read fails
//     with ErrTimeout exactly as it does with deadlines;
//   - closes a Conn whose write has taken longer than its write wait
//     (DefaultWriteWait): its peer is a slow consumer, and the write fails.
//
// Both bounds hold late by at most two ticks, never early: a stamp is up
// to a tick old when it is taken and the check runs once a tick.
type Watchdog struct {
	tick time.Duration
	now  atomic.Int64 // the coarse clock: UnixNano at the last tick

	mu    sync.Mutex
	conns map[*Conn]struct{}
}

// NewWatchdog returns a watchdog that checks its Conns every tick once Run
// runs. Pick tick well under the shortest pingWait it watches: it is how
// late a timeout may come.
func NewWatchdog(tick time.Duration) *Watchdog {
	w := &Watchdog{tick: tick, conns: map[*Conn]struct{}{}}
	w.now.Store(time.Now().UnixNano())
	return w
}

// Run checks the watched Conns every tick until ctx ends. Until it runs,
// nothing times out.
func (w *Watchdog) Run(ctx context.Context) {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			w.check(now.UnixNano())
		}
	}
}

// Watching is how many Conns the watchdog holds.
func (w *Watchdog) Watching() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.conns)
}

// check advances the coarse clock to now and fails what is overdue. The
// sockets are touched after the lock is let go: a Conn closing meanwhile
// waits for the lock to leave the watchdog.
func (w *Watchdog) check(now int64) {
	w.now.Store(now)
	late := int64(w.tick) // a stamp may be a tick old
	var silent, stuck []*Conn
	w.mu.Lock()
	for c := range w.conns {
		if now-c.readAt.Load() > int64(c.pingWait)+late {
			silent = append(silent, c)
		}
		if at := c.writeAt.Load(); at != 0 && now-at > int64(c.writeWait)+late {
			stuck = append(stuck, c)
		}
	}
	w.mu.Unlock()
	for _, c := range silent {
		// A deadline in the past fails the Read in progress, or the next,
		// as the deadline a Conn without a watchdog sets would have.
		// Read then closes the Conn, which leaves the watchdog.
		_ = c.ws.SetReadDeadline(time.Unix(1, 0))
	}
	for _, c := range stuck {
		c.CloseNow()
	}
}

func (w *Watchdog) add(c *Conn) {
	w.mu.Lock()
	w.conns[c] = struct{}{}
	w.mu.Unlock()
}

func (w *Watchdog) remove(c *Conn) {
	w.mu.Lock()
	delete(w.conns, c)
	w.mu.Unlock()
}

// Watch hands c's read and write bounds to w: from now on c sets no
// deadlines on its socket for reads and writes (closing still does). Call
// it right after NewConn, before c is read or written, and at most once;
// c leaves w when it is closed.
func (c *Conn) Watch(w *Watchdog) {
	c.dog = w
	// A deadline set before (the handshake's, or an earlier Conn's on the
	// same socket) would outlive its purpose.
	_ = c.ws.SetReadDeadline(time.Time{})
	_ = c.ws.SetWriteDeadline(time.Time{})
	c.readAt.Store(w.now.Load())
	w.add(c)
}
