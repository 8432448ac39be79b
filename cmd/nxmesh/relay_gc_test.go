package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/relay"
)

// tunerTest runs a gcTuner on relay Stats, a clock and ticks that the test
// drives, and records what the tuner sets and releases.
type tunerTest struct {
	tn   *gcTuner
	tick chan time.Time

	mu       sync.Mutex
	st       relay.Stats
	now      time.Time
	sets     []int
	released int
}

func startTuner(t *testing.T) *tunerTest {
	x := &tunerTest{tick: make(chan time.Time), now: time.Unix(0, 0)}
	x.tn = newGCTuner(
		func(p int) { x.mu.Lock(); defer x.mu.Unlock(); x.sets = append(x.sets, p) },
		func() { x.mu.Lock(); defer x.mu.Unlock(); x.released++ },
		func() time.Time { x.mu.Lock(); defer x.mu.Unlock(); return x.now },
	)
	x.tn.counts = func() (int64, int64) { x.mu.Lock(); defer x.mu.Unlock(); return gcCounts(x.st) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.tn.run(ctx, x.tick); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return x
}

// step adds d's counts to the relay's and moves the clock a tick, then
// sends the tick; the send returns once the tuner took it, and the next
// send once it has handled it.
func (x *tunerTest) step(d relay.Stats) {
	x.mu.Lock()
	x.st.Accepted += d.Accepted
	x.st.SessionsStarted += d.SessionsStarted
	x.st.BundlesSent += d.BundlesSent
	x.st.ResultsReceived += d.ResultsReceived
	x.now = x.now.Add(gcTick)
	now := x.now
	x.mu.Unlock()
	x.tick <- now
}

// settle sends a tick with nothing new at the same time: a no-op that
// returns once the step before it was handled.
func (x *tunerTest) settle() {
	x.mu.Lock()
	now := x.now
	x.mu.Unlock()
	x.tick <- now
}

// quiet lets more than gcQuiet pass with nothing counted.
func (x *tunerTest) quiet() {
	for range int(gcQuiet/gcTick) + 2 {
		x.step(relay.Stats{})
	}
	x.settle()
}

// expect fails t unless the tuner has set exactly sets and released
// memory released times.
func (x *tunerTest) expect(t *testing.T, when string, sets []int, released int) {
	t.Helper()
	x.mu.Lock()
	defer x.mu.Unlock()
	if !slices.Equal(x.sets, sets) || x.released != released {
		t.Fatalf("%s: GOGC set %v, released %d; want %v and %d", when, x.sets, x.released, sets, released)
	}
}

// TestGCTunerBurst: a burst of accepts raises GOGC once, it stays raised
// while accepts keep coming, and a quiet second brings it back to the idle
// percent and releases memory, exactly once. A burst of bundles sent (a
// push) raises and lowers GOGC the same way but releases nothing, and so
// does the relay's word that a fan-out begins, without waiting for a tick.
func TestGCTunerBurst(t *testing.T) {
	x := startTuner(t)
	idle, burst := relayGCPercent, relayBurstGCPercent

	x.step(relay.Stats{Accepted: gcBurstEvents - 1}) // a few reconnects: no burst
	x.settle()
	x.expect(t, "after a few accepts", []int{idle}, 0)
	for range 8 { // two seconds of steady arrivals
		x.step(relay.Stats{Accepted: gcBurstEvents})
	}
	x.settle()
	x.expect(t, "during a burst of accepts", []int{idle, burst}, 0)
	x.quiet()
	x.expect(t, "after the burst of accepts", []int{idle, burst, idle}, 1)

	x.step(relay.Stats{BundlesSent: 5000}) // a push: bundles to 5,000 agents at once
	x.settle()
	x.expect(t, "during a push", []int{idle, burst, idle, burst}, 1)
	for range int(gcQuiet/gcTick) + 2 { // results come back for longer than gcQuiet
		x.step(relay.Stats{ResultsReceived: 1000})
	}
	x.settle()
	x.expect(t, "while results come back", []int{idle, burst, idle, burst}, 1)
	x.quiet()
	x.expect(t, "after the push (no new release)", []int{idle, burst, idle, burst, idle}, 1)

	// The relay says it is about to fan out: burst at once, with no tick
	// and nothing counted yet; a fan-out to a few agents is no burst.
	x.tn.onFanOut(gcBurstEvents - 1)
	x.settle()
	x.expect(t, "after a fan-out to a few agents", []int{idle, burst, idle, burst, idle}, 1)
	x.tn.onFanOut(5000)
	x.tn.onFanOut(5000) // a wake-up is pending: never blocks
	x.settle()          // the tuner takes a pending wake-up before a tick
	x.expect(t, "on a fan-out to 5,000 agents", []int{idle, burst, idle, burst, idle, burst}, 1)
	x.quiet()
	x.expect(t, "after the fan-out", []int{idle, burst, idle, burst, idle, burst, idle}, 1)
	x.tn.onFanOut(-1) // the hub sent a bundle: assignments follow
	x.settle()
	x.expect(t, "on bundle data", []int{idle, burst, idle, burst, idle, burst, idle, burst}, 1)
}

// TestGCTunerStorm: in a reconnect storm every connection is accepted in
// the first moments and waits for a handshake slot; the burst lasts until
// the sessions have stopped starting, not until the accepts have.
func TestGCTunerStorm(t *testing.T) {
	x := startTuner(t)
	idle, burst := relayGCPercent, relayBurstGCPercent

	x.step(relay.Stats{Accepted: 5000}) // the whole storm accepted at once
	for range 4 * int(gcQuiet/gcTick) { // four seconds of handshakes
		x.step(relay.Stats{SessionsStarted: 300})
	}
	x.settle()
	x.expect(t, "while sessions start", []int{idle, burst}, 0)
	x.quiet()
	x.expect(t, "after the storm", []int{idle, burst, idle}, 1)
}
