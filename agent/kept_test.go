package agent_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/nginx"
)

// TestApplierKeepsReleases: the Applier is a Keeper over its release
// directories. A release it applied comes back verified, and builds the
// next bundle from a delta; a hash it never applied, or one shaped like a
// path, is not kept.
func TestApplierKeepsReleases(t *testing.T) {
	e := newEnv(t, nil)
	b1 := bundle(t, e.ports, 1, 3)
	mustApply(t, e.applier, b1)
	got := e.applier.Kept(b1.Hash)
	if got == nil || got.Hash != b1.Hash || got.Verify() != nil {
		t.Fatalf("Kept(applied) = %v", got)
	}
	b2 := bundle(t, e.ports, 2, 3)
	built, err := nginx.ApplyDelta(got, nginx.Diff(b1, b2), b2.Hash, nginx.Limits{})
	if err != nil {
		t.Fatalf("delta from the kept release: %v", err)
	}
	mustApply(t, e.applier, built)
	serves(t, e.ports.vhost, "gen=2 vhost=0\n")
	for _, h := range []string{strings.Repeat("0", 64), "../../etc", "", b1.Hash[:63]} {
		if b := e.applier.Kept(h); b != nil {
			t.Errorf("Kept(%q) = bundle %s, want nil", h, b.Hash)
		}
	}
}

// TestLoopKeepsApplied: after KeepApplied the Loop keeps the last bundle
// that applied, not one that failed, and only under its own hash.
func TestLoopKeepsApplied(t *testing.T) {
	p := ports{status: 1, vhost: 2}
	good, bad := bundle(t, p, 1, 1), bundle(t, p, 2, 1)
	results := make(chan agent.Result, 2)
	apply := func(_ context.Context, b *nginx.Bundle) agent.Result {
		if b.Hash == bad.Hash {
			return agent.Result{State: agent.Rejected, Hash: b.Hash}
		}
		return agent.Result{State: agent.Applied, Hash: b.Hash}
	}
	for _, keep := range []bool{false, true} {
		l := agent.NewLoop(apply, newFakeClock(), func(r agent.Result) { results <- r })
		if keep {
			l.KeepApplied()
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Run(ctx) }()
		l.Submit(good)
		<-results
		l.Submit(bad)
		<-results
		cancel()
		<-done
		if got := l.Kept(good.Hash); (got == good) != keep {
			t.Errorf("KeepApplied %v: Kept(applied) = %v", keep, got)
		}
		if got := l.Kept(bad.Hash); got != nil {
			t.Errorf("KeepApplied %v: Kept(rejected) = bundle %s, want nil", keep, got.Hash)
		}
	}
}
