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
// measurements. So while connections arrive in bulk the relay collects at
// 100 %, and once they have stopped it goes back to 25 % and hands the
// garbage's pages back to the OS.
const (
	relayGCPercent      = 25
	relayBurstGCPercent = 100
	// gcBurstAccepts is how many accepts within one gcTick make a burst;
	// a few reconnecting agents are not one.
	gcBurstAccepts = 20
	gcTick         = 250 * time.Millisecond
	// gcQuiet is how long without a burst ends one.
	gcQuiet = time.Second
)

// gcTuner switches GOGC between idle and burst from the relay's count of
// accepted connections.
type gcTuner struct {
	accepted func() int64      // relay.Server.Stats().Accepted
	setGC    func(percent int) // debug.SetGCPercent
	release  func()            // debug.FreeOSMemory
	now      func() time.Time
}

// run applies the policy on every tick until ctx ends.
func (t *gcTuner) run(ctx context.Context, tick <-chan time.Time) {
	t.setGC(relayGCPercent)
	last := t.accepted()
	var burst bool
	var lastBusy time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		n := t.accepted()
		busy := n-last >= gcBurstAccepts
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

// runRelayGC runs the tuner for accepted on a real ticker.
func runRelayGC(ctx context.Context, accepted func() int64) {
	tk := time.NewTicker(gcTick)
	defer tk.Stop()
	t := &gcTuner{
		accepted: accepted,
		setGC:    func(p int) { debug.SetGCPercent(p) },
		release:  debug.FreeOSMemory,
		now:      time.Now,
	}
	t.run(ctx, tk.C)
}
