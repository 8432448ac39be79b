package main

import (
	"context"
	"runtime/debug"
	"time"
)

// GC policy of `relay run` when GOGC is not set.
//
// A relay's memory is nearly all long-lived agent sessions, so while it is
// quiet it collects at 25 % heap growth (relayGCPercent): memory per idle
// session stays low and an idle relay makes little garbage, so that costs
// little CPU. A burst of connections is the opposite: every TLS handshake
// makes tens of KiB of garbage, and at 25 % the collector runs four times
// as often as at Go's default, a quarter of a reconnect storm's CPU in
// measurements. A push is another: thousands of bundle writes and results
// at once, and a quarter of the relay's CPU during it went to collecting
// at 25 %. So while connections arrive or bundles go out in bulk the relay
// collects at 100 %, and once they have stopped it goes back to 25 % and
// hands the garbage's pages back to the OS. Heartbeats are steady work,
// not a burst, and do not count.
const (
	relayGCPercent      = 25
	relayBurstGCPercent = 100
	// gcBurstEvents is how many accepts or bundles sent within one gcTick
	// make a burst; a few reconnecting agents are not one.
	gcBurstEvents = 20
	gcTick        = 250 * time.Millisecond
	// gcQuiet is how long without a burst ends one.
	gcQuiet = time.Second
)

// gcTuner switches GOGC between idle and burst from the relay's count of
// accepted connections and bundles sent.
type gcTuner struct {
	events  func() int64      // relay.Server.Stats().Bursty()
	setGC   func(percent int) // debug.SetGCPercent
	release func()            // debug.FreeOSMemory
	now     func() time.Time
}

// run applies the policy on every tick until ctx ends.
func (t *gcTuner) run(ctx context.Context, tick <-chan time.Time) {
	t.setGC(relayGCPercent)
	last := t.events()
	var burst bool
	var lastBusy time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		n := t.events()
		busy := n-last >= gcBurstEvents
		last = n
		switch {
		case busy:
			lastBusy = t.now()
			if !burst {
				burst = true
				t.setGC(relayBurstGCPercent)
			}
		case burst && t.now().Sub(lastBusy) >= gcQuiet:
			burst = false
			t.setGC(relayGCPercent)
			t.release()
		}
	}
}

// runRelayGC runs the tuner for events on a real ticker.
func runRelayGC(ctx context.Context, events func() int64) {
	tk := time.NewTicker(gcTick)
	defer tk.Stop()
	t := &gcTuner{
		events:  events,
		setGC:   func(p int) { debug.SetGCPercent(p) },
		release: debug.FreeOSMemory,
		now:     time.Now,
	}
	t.run(ctx, tk.C)
}
