package agent_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/nginx"
)

// newFakeClock is a clock the test moves.
func newFakeClock() *testenv.Clock { return testenv.NewClock(time.Unix(1_700_000_000, 0)) }

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, bounded by the deadline
	}
}

// TestLoopCoalesces: bundles submitted while an apply runs and during the
// reload interval collapse into one apply of the last of them, no earlier
// than max(1 s, twice the last reload).
func TestLoopCoalesces(t *testing.T) {
	clock := newFakeClock()
	var mu sync.Mutex
	var applied []string
	release := make(chan struct{})
	apply := func(ctx context.Context, b *nginx.Bundle) agent.Result {
		mu.Lock()
		applied = append(applied, b.Hash)
		first := len(applied) == 1
		mu.Unlock()
		if first {
			<-release // the first apply is slow: submits pile up meanwhile
		}
		// Each reload took 3 s of (fake) time: next one no sooner than 6 s.
		return agent.Result{State: agent.Applied, Hash: b.Hash, Reloads: 1,
			Durations: agent.Durations{Reload: time.Second, Verify: 2 * time.Second}}
	}
	calls := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), applied...)
	}
	l := agent.NewLoop(apply, clock, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	p := ports{status: 1, vhost: 2}
	bundles := make([]*nginx.Bundle, 50)
	for i := range bundles {
		bundles[i] = bundle(t, p, i, 1)
	}
	l.Submit(bundles[0])
	eventually(t, "first apply", func() bool { return len(calls()) == 1 })
	for _, b := range bundles[1:] {
		l.Submit(b)
	}
	close(release)
	// The loop now waits for the reload interval on the fake clock.
	eventually(t, "the loop to wait", func() bool { return clock.Waiting() == 1 })
	if got := len(calls()); got != 1 {
		t.Fatalf("%d applies before the reload interval passed, want 1", got)
	}
	clock.Advance(5 * time.Second)
	if got := len(calls()); got != 1 {
		t.Fatalf("%d applies 5 s after a 3 s reload, want 1", got)
	}
	clock.Advance(time.Second)
	eventually(t, "second apply", func() bool { return len(calls()) == 2 })
	if got := calls(); got[1] != bundles[49].Hash {
		t.Errorf("second apply is %s, want the last submitted %s", got[1][:12], bundles[49].Hash[:12])
	}
	// A later submit waits for the interval again; nothing else is pending.
	l.Submit(bundles[0])
	eventually(t, "the loop to wait", func() bool { return clock.Waiting() == 1 })
	clock.Advance(6 * time.Second)
	eventually(t, "third apply", func() bool { return len(calls()) == 3 })
}

// TestLoopRealNginx: many bundles submitted quickly to a real nginx cause
// few reloads, and the last one is live.
func TestLoopRealNginx(t *testing.T) {
	e := newEnv(t, nil)
	var mu sync.Mutex
	var results []agent.Result
	l := agent.NewLoop(e.applier.Apply, nil, func(r agent.Result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()

	var last *nginx.Bundle
	for gen := range 30 {
		last = bundle(t, e.ports, gen, 3)
		l.Submit(last)
	}
	eventually(t, "the last bundle to be live", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(results) > 0 && results[len(results)-1].Hash == last.Hash
	})
	serves(t, e.ports.vhost, "gen=29")
	mu.Lock()
	defer mu.Unlock()
	reloads := 0
	for _, r := range results {
		if r.State != agent.Applied {
			t.Errorf("apply %s: %s %s", r.Hash[:12], r.State, r.Reason)
		}
		reloads += r.Reloads
	}
	if len(results) > 3 {
		t.Errorf("30 quick submits caused %d applies (%d reloads), want at most 3", len(results), reloads)
	}
	t.Logf("30 submits: %d applies, %d reloads", len(results), reloads)
}
