package main

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestGCTunerBurst: a burst of accepts raises GOGC once, it stays raised
// while accepts keep coming, and a quiet second brings it back to the idle
// percent and releases memory, exactly once.
func TestGCTunerBurst(t *testing.T) {
	var (
		mu       sync.Mutex
		accepted int64
		now      = time.Unix(0, 0)
		sets     []int
		released int
	)
	tick := make(chan time.Time)
	tn := &gcTuner{
		events:  func() int64 { mu.Lock(); defer mu.Unlock(); return accepted },
		setGC:   func(p int) { mu.Lock(); defer mu.Unlock(); sets = append(sets, p) },
		release: func() { mu.Lock(); defer mu.Unlock(); released++ },
		now:     func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tn.run(ctx, tick); close(done) }()
	// step adds accepts and moves the clock, then waits for the tuner to
	// take the tick (an unbuffered send returns once it is received; the
	// second send returns once the first was handled).
	step := func(accepts int64) {
		mu.Lock()
		accepted += accepts
		now = now.Add(gcTick)
		mu.Unlock()
		tick <- now
	}
	settle := func() { tick <- now } // no accepts, same time: a no-op tick
	state := func() ([]int, int) { mu.Lock(); defer mu.Unlock(); return slices.Clone(sets), released }

	step(gcBurstEvents - 1) // a few reconnects: no burst
	settle()
	if s, r := state(); !slices.Equal(s, []int{relayGCPercent}) || r != 0 {
		t.Fatalf("after a few accepts: GOGC set %v, released %d", s, r)
	}
	for range 8 { // two seconds of steady arrivals
		step(gcBurstEvents)
	}
	settle()
	if s, _ := state(); !slices.Equal(s, []int{relayGCPercent, relayBurstGCPercent}) {
		t.Fatalf("during a burst: GOGC set %v", s)
	}
	for range int(gcQuiet/gcTick) + 2 {
		step(0)
	}
	settle()
	if s, r := state(); !slices.Equal(s, []int{relayGCPercent, relayBurstGCPercent, relayGCPercent}) || r != 1 {
		t.Fatalf("after the burst: GOGC set %v, released %d", s, r)
	}
	cancel()
	<-done
}
