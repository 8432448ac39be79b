package main

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/nxmesh/nxmesh/bench"
)

// benchAgentsCmd is an agent process of `nxmesh bench`, which starts it
// when its simulated agents do not fit one process's open files limit. It
// speaks with the bench over stdin and stdout and ends when stdin does.
// Hidden: only the bench runs it.
type benchAgentsCmd struct {
	debugFlags `embed:""`
}

func (c *benchAgentsCmd) Run(ctx context.Context, g *Globals) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error {
		defer cancel() // the agents are done: so is the profiler
		return bench.RunAgents(ctx, g.stdin, g.stdout)
	})
	eg.Go(func() error { return c.serveDebug(ctx, g.Logger()) })
	return eg.Wait()
}
