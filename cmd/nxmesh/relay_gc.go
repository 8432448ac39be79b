package main

import (
	"context"
	"runtime/debug"
	"time"
)

// GC policy of `relay run` when GOGC is not set.
//
// A relay's memory is nearly all long-lived agent sessions, so while it is
// quiet it collects at 12 % heap growth (relayGCPercent): memory per idle
// session stays low, and an idle relay makes so little garbage that this
// costs nothing. Go collects every two minutes whatever the growth; the
// garbage of heartbeats (about 250 bytes each, one per agent per 15 s)
// reaches 12 % of the sessions' heap (about 15 KB each) in about two
// minutes too, at any number of agents. Each point of GOGC below that
// would buy about 150 bytes per agent for another collection of the whole
// heap; each point above it holds as much garbage for nothing.
//
// A burst of connections is the opposite: every TLS handshake makes tens
// of KiB of garbage, and at 25 % the collector ran four times as often as
// at Go's default, a quarter of a reconnect storm's CPU in measurements. A
// push is another: thousands of bundle writes and results at once, and a
// quarter of the relay's CPU during it went to collecting at 25 %. So
// while connections arrive or bundles go out in bulk the relay collects at
// 100 %, and once they have stopped it goes back to 12 %. Heartbeats are
// steady work, not a burst, and do not count. After a burst of
// connections it also hands the garbage's pages back to the OS (a forced
// collection): hundreds of megabytes of handshake garbage are gone for
// good. After a fan-out it does not: a push leaves little, and forcing a
// collection and faulting the pages back in for every push cost more than
// it saved.
const (
	relayGCPercent      = 12
	relayBurstGCPercent = 100
	// gcBurstEvents is how many accepts or bundles sent within one gcTick
	// make a burst; a few reconnecting agents are not one.
	gcBurstEvents = 20
	gcTick        = 250 * time.Millisecond
	// gcQuiet is how long without a burst ends one.
	gcQuiet = time.Second
)

// gcTuner switches GOGC between idle and burst from the relay's counts of
// accepted connections and bundles sent.
type gcTuner struct {
	counts  func() (accepted, sent int64) // from relay.Server.Stats()
	setGC   func(percent int)             // debug.SetGCPercent
	release func()                        // debug.FreeOSMemory
	now     func() time.Time
}

// run applies the policy on every tick until ctx ends.
func (t *gcTuner) run(ctx context.Context, tick <-chan time.Time) {
	t.setGC(relayGCPercent)
	lastAccepted, lastSent := t.counts()
	var burst bool
	var lastBusy time.Time
	var burstAccepts int64 // connections accepted during the burst
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		accepted, sent := t.counts()
		busy := accepted-lastAccepted+sent-lastSent >= gcBurstEvents
		if !burst && busy {
			burstAccepts = 0
		}
		if burst || busy {
			burstAccepts += accepted - lastAccepted
		}
		lastAccepted, lastSent = accepted, sent
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
			if burstAccepts >= gcBurstEvents {
				t.release()
			}
		}
	}
}

// runRelayGC runs the tuner for counts on a real ticker.
func runRelayGC(ctx context.Context, counts func() (accepted, sent int64)) {
	tk := time.NewTicker(gcTick)
	defer tk.Stop()
	t := &gcTuner{
		counts:  counts,
		setGC:   func(p int) { debug.SetGCPercent(p) },
		release: debug.FreeOSMemory,
		now:     time.Now,
	}
	t.run(ctx, tk.C)
}
