package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/relay"
)

// TestGCTunerBurst: a burst of accepts raises GOGC once, it stays raised
// while accepts keep coming, and a quiet second brings it back to the idle
// percent and releases memory, exactly once. A burst of bundles sent (a
// push) raises and lowers GOGC the same way but releases nothing, and so
// does the relay's word that a fan-out begins, without waiting for a tick.
func TestGCTunerBurst(t *testing.T) {
	var (
		mu             sync.Mutex
		accepted, sent int64
		now            = time.Unix(0, 0)
		sets           []int
		released       int
	)
	tick := make(chan time.Time)
	tn := newGCTuner(
		func(p int) { mu.Lock(); defer mu.Unlock(); sets = append(sets, p) },
		func() { mu.Lock(); defer mu.Unlock(); released++ },
		func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	)
	tn.counts = func() (int64, int64) { mu.Lock(); defer mu.Unlock(); return accepted, sent }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tn.run(ctx, tick); close(done) }()
	// step adds accepts and sends and moves the clock, then waits for the
	// tuner to take the tick (an unbuffered send returns once it is
	// received; the second send returns once the first was handled).
	step := func(accepts, sends int64) {
		mu.Lock()
		accepted += accepts
		sent += sends
		now = now.Add(gcTick)
		mu.Unlock()
		tick <- now
	}
	settle := func() { tick <- now } // nothing new, same time: a no-op tick
	state := func() ([]int, int) { mu.Lock(); defer mu.Unlock(); return slices.Clone(sets), released }
	quiet := func() {
		for range int(gcQuiet/gcTick) + 2 {
			step(0, 0)
		}
		settle()
	}
	idle, burst := relayGCPercent, relayBurstGCPercent

	step(gcBurstEvents-1, 0) // a few reconnects: no burst
	settle()
	if s, r := state(); !slices.Equal(s, []int{idle}) || r != 0 {
		t.Fatalf("after a few accepts: GOGC set %v, released %d", s, r)
	}
	for range 8 { // two seconds of steady arrivals
		step(gcBurstEvents, 0)
	}
	settle()
	if s, _ := state(); !slices.Equal(s, []int{idle, burst}) {
		t.Fatalf("during a burst of accepts: GOGC set %v", s)
	}
	quiet()
	if s, r := state(); !slices.Equal(s, []int{idle, burst, idle}) || r != 1 {
		t.Fatalf("after the burst of accepts: GOGC set %v, released %d; want back to %d and one release", s, r, idle)
	}

	step(0, 5000) // a push: bundles to 5,000 agents at once
	settle()
	if s, _ := state(); !slices.Equal(s, []int{idle, burst, idle, burst}) {
		t.Fatalf("during a push: GOGC set %v", s)
	}
	quiet()
	if s, r := state(); !slices.Equal(s, []int{idle, burst, idle, burst, idle}) || r != 1 {
		t.Fatalf("after the push: GOGC set %v, released %d; want back to %d and no new release", s, r, idle)
	}

	// The relay says it is about to fan out: burst at once, with no tick
	// and nothing counted yet; a fan-out to a few agents is no burst.
	tn.onFanOut(gcBurstEvents - 1)
	settle()
	if s, _ := state(); len(s) != 5 {
		t.Fatalf("after a fan-out to %d agents: GOGC set %v", gcBurstEvents-1, s)
	}
	tn.onFanOut(5000)
	tn.onFanOut(5000) // a wake-up is pending: never blocks
	settle()          // the tuner takes a pending wake-up before a tick
	if s, _ := state(); !slices.Equal(s, []int{idle, burst, idle, burst, idle, burst}) {
		t.Fatalf("on a fan-out to 5,000 agents: GOGC set %v", s)
	}
	quiet()
	if s, r := state(); !slices.Equal(s, []int{idle, burst, idle, burst, idle, burst, idle}) || r != 1 {
		t.Fatalf("after the fan-out: GOGC set %v, released %d", s, r)
	}
	tn.onFanOut(-1) // the hub sent a bundle: assignments follow
	settle()
	if s, _ := state(); !slices.Equal(s, []int{idle, burst, idle, burst, idle, burst, idle, burst}) {
		t.Fatalf("on bundle data: GOGC set %v", s)
	}
	cancel()
	<-done
}

// TestGCTunerStorm: in a reconnect storm every connection is accepted in
// the first moments and waits for a handshake slot; the burst lasts until
// the sessions have stopped starting, not until the accepts have.
func TestGCTunerStorm(t *testing.T) {
	var (
		mu       sync.Mutex
		st       relay.Stats
		now      = time.Unix(0, 0)
		sets     []int
		released int
	)
	tick := make(chan time.Time)
	tn := newGCTuner(
		func(p int) { mu.Lock(); defer mu.Unlock(); sets = append(sets, p) },
		func() { mu.Lock(); defer mu.Unlock(); released++ },
		func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	)
	tn.counts = func() (int64, int64) { mu.Lock(); defer mu.Unlock(); return gcCounts(st) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tn.run(ctx, tick)
	step := func(accepts, sessions int64) {
		mu.Lock()
		st.Accepted += accepts
		st.SessionsStarted += sessions
		now = now.Add(gcTick)
		mu.Unlock()
		tick <- now
	}
	state := func() ([]int, int) { mu.Lock(); defer mu.Unlock(); return slices.Clone(sets), released }
	idle, burst := relayGCPercent, relayBurstGCPercent

	step(5000, 0)                       // the whole storm accepted at once
	for range 4 * int(gcQuiet/gcTick) { // four seconds of handshakes
		step(0, 300)
	}
	tick <- now
	if s, r := state(); !slices.Equal(s, []int{idle, burst}) || r != 0 {
		t.Fatalf("while sessions start: GOGC set %v, released %d; want %d throughout", s, r, burst)
	}
	for range int(gcQuiet/gcTick) + 2 {
		step(0, 0)
	}
	tick <- now
	if s, r := state(); !slices.Equal(s, []int{idle, burst, idle}) || r != 1 {
		t.Fatalf("after the storm: GOGC set %v, released %d; want back to %d and one release", s, r, idle)
	}
}
