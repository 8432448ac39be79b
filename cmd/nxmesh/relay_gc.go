package main

import (
	"context"
	"time"

	"github.com/nxmesh/nxmesh/relay"
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
// at Go's default, a quarter of a reconnect storm's CPU in measurements.
// A burst lasts while connections are accepted and while sessions start:
// in a storm every connection is accepted within a second and then waits
// for a handshake slot, and a tuner that counted accepts alone went back
// to 12 % in the middle of the handshakes (gctrace: a collection every
// 100 ms, at a quarter of the relay's CPU, for the rest of the storm). A
// push is another: thousands of bundle writes and results at once, and a
// quarter of the relay's CPU during it went to collecting at 25 %. So
// while connections arrive, or bundles go out in bulk and results come
// back, the relay collects at 100 %, and once they have stopped it goes
// back to 12 %. Going back collects what the burst left at once, so a push
// counts until its results are in, not just while its frames go out: it
// then happens after the push, not during its acknowledgements.
// Heartbeats are steady work, not a burst, and do not count. After a burst
// of connections it also hands the garbage's pages back to the OS (a
// forced collection): hundreds of megabytes of handshake garbage are gone
// for good. After a fan-out it does not: a push leaves little, and forcing
// a collection and faulting the pages back in for every push cost more
// than it saved.
const (
	relayGCPercent      = 12
	relayBurstGCPercent = 100
	// gcBurstEvents is how many accepts, bundles sent or results received
	// within one gcTick make a burst; a few reconnecting agents are not
	// one.
	gcBurstEvents = 20
	gcTick        = 250 * time.Millisecond
	// gcQuiet is how long without a burst ends one.
	gcQuiet = time.Second
)

// gcTuner switches GOGC between idle and burst from the relay's counts of
// accepted connections and of bundles sent and results received, and at
// once when the relay is about to fan a bundle out (fanOut).
type gcTuner struct {
	// counts are from relay.Server.Stats(): accepted is connections
	// accepted plus sessions started, pushed bundles sent plus results
	// received.
	counts  func() (accepted, pushed int64)
	setGC   func(percent int) // debug.SetGCPercent
	release func()            // debug.FreeOSMemory
	now     func() time.Time
	// fanOut wakes the tuner before a fan-out to gcBurstEvents agents or
	// more (relay.Config.FanOut): at 12 % the heap's headroom is gone
	// within the first quarter second of a push, and a collection at the
	// idle pace ran in every push, in each relay.
	fanOut chan struct{}
}

// newGCTuner returns a tuner with its fan-out channel; counts is set once
// the relay it watches exists (its Config takes onFanOut).
func newGCTuner(setGC func(int), release func(), now func() time.Time) *gcTuner {
	return &gcTuner{setGC: setGC, release: release, now: now, fanOut: make(chan struct{}, 1)}
}

// gcCounts is gcTuner.counts from a relay's Stats.
func gcCounts(st relay.Stats) (accepted, pushed int64) {
	return st.Accepted + st.SessionsStarted, st.BundlesSent + st.DeltasSent + st.ResultsReceived
}

// onFanOut is relay.Config.FanOut: it never blocks. agents is how many
// agents get a bundle, or -1 when the hub sent one (assignments follow).
func (t *gcTuner) onFanOut(agents int) {
	if agents >= 0 && agents < gcBurstEvents {
		return
	}
	select {
	case t.fanOut <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// run applies the policy on every tick, and on every fan-out, until ctx
// ends.
func (t *gcTuner) run(ctx context.Context, tick <-chan time.Time) {
	t.setGC(relayGCPercent)
	lastAccepted, lastPushed := t.counts()
	var burst bool
	var lastBusy time.Time
	var burstAccepts int64 // connections accepted during the burst
	for {
		// A pending fan-out goes first, before a tick that is also ready.
		fanOut := false
		select {
		case <-t.fanOut:
			fanOut = true
		default:
			select {
			case <-ctx.Done():
				return
			case <-tick:
			case <-t.fanOut:
				fanOut = true
			}
		}
		accepted, pushed := t.counts()
		busy := fanOut || accepted-lastAccepted+pushed-lastPushed >= gcBurstEvents
		if !burst && busy {
			burstAccepts = 0
		}
		if burst || busy {
			burstAccepts += accepted - lastAccepted
		}
		lastAccepted, lastPushed = accepted, pushed
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

// runTicking runs the tuner on a real ticker until ctx ends.
func (t *gcTuner) runTicking(ctx context.Context) {
	tk := time.NewTicker(gcTick)
	defer tk.Stop()
	t.run(ctx, tk.C)
}
