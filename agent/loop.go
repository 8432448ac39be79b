package agent

import (
	"context"
	"sync"
	"time"

	"github.com/nxmesh/nxmesh/nginx"
)

// MinReloadInterval is the shortest time between two reloads, whatever
// their duration (DESIGN.md: at most one reload per max(1 s, twice the last
// reload's duration)).
const MinReloadInterval = time.Second

// ApplyFunc applies one bundle; (*Applier).Apply is one.
type ApplyFunc func(ctx context.Context, b *nginx.Bundle) Result

// Loop coalesces desired bundles: Submit only records the latest, and Run
// applies it once the previous reload is far enough behind. Bundles
// submitted during an apply or during the wait replace each other; only the
// last one is applied.
type Loop struct {
	apply    ApplyFunc
	clock    Clock
	onResult func(Result)
	// wake has room for one signal: Submit never blocks, and a pending
	// signal already says "look at desired".
	wake chan struct{}

	mu      sync.Mutex // guards desired and applied
	desired *nginx.Bundle
	// applied is the last bundle applied, kept when keepApplied is set.
	applied     *nginx.Bundle
	keepApplied bool
}

// KeepApplied makes the Loop keep the last bundle it applied in memory, so
// that it can be a Session's Keeper (the bench's simulated agents have no
// release directories). Call it before Run.
func (l *Loop) KeepApplied() { l.keepApplied = true }

// Kept implements Keeper: the last bundle applied, when it is hash and
// KeepApplied was called.
func (l *Loop) Kept(hash string) *nginx.Bundle {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.applied != nil && l.applied.Hash == hash {
		return l.applied
	}
	return nil
}

// NewLoop returns a Loop that applies with apply, waits with clock and hands
// every result to onResult (which may be nil).
func NewLoop(apply ApplyFunc, clock Clock, onResult func(Result)) *Loop {
	if clock == nil {
		clock = RealClock
	}
	return &Loop{apply: apply, clock: clock, onResult: onResult, wake: make(chan struct{}, 1)}
}

// Submit makes b the desired bundle, replacing any not yet applied.
func (l *Loop) Submit(b *nginx.Bundle) {
	l.mu.Lock()
	l.desired = b
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *Loop) take() *nginx.Bundle {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.desired
	l.desired = nil
	return b
}

// Run applies submitted bundles until ctx ends, at most one reload per
// max(MinReloadInterval, twice the last reload's duration). It returns
// ctx's error.
func (l *Loop) Run(ctx context.Context) error {
	var next time.Time // no apply before this
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.wake:
		}
		if wait := next.Sub(l.clock.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-l.clock.After(wait):
			}
		}
		b := l.take()
		if b == nil {
			continue
		}
		res := l.apply(ctx, b)
		if l.keepApplied && res.State == Applied && res.Hash == b.Hash {
			l.mu.Lock()
			l.applied = b
			l.mu.Unlock()
		}
		if l.onResult != nil {
			l.onResult(res)
		}
		if res.Reloads > 0 {
			// nginx loads the configuration after the signal: the reload
			// lasts until the new generation answers.
			d := res.Durations.Reload + res.Durations.Verify + res.Durations.Rollback
			next = l.clock.Now().Add(max(MinReloadInterval, 2*d))
		}
	}
}
