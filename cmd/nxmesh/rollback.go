package main

import (
	"context"
	"fmt"
)

type rollbackCmd struct {
	workspaceFlags `embed:""`
	waitFlags      `embed:""`

	Revision int64 `arg:"" name:"REV" help:"The revision whose resources the workspace returns to."`
}

func (c *rollbackCmd) Help() string {
	return `Creates a new revision whose resources equal those of REV: resources changed since are restored, and resources created since are removed. The changes are printed like an apply plan, then the command waits for the agents like apply does.

Exit status: 0 when every online agent applied the new revision; 1 when an agent rejected or rolled it back, or when --timeout passed with agents still pending; 2 for usage errors.`
}

func (c *rollbackCmd) Run(ctx context.Context, g *Globals) error {
	return loginHint(c.run(ctx, g))
}

func (c *rollbackCmd) run(ctx context.Context, g *Globals) error {
	api, err := newAPIClient(c.hubFlags, true)
	if err != nil {
		return err
	}
	var out applyResult
	if err := api.do(ctx, "POST", fmt.Sprintf("%s/revisions/%d/rollback", c.path(), c.Revision), nil, &out); err != nil {
		return err
	}
	r := &rollout{api: api, ws: c.workspaceFlags, rev: out.Revision, g: g}
	if !out.Changed {
		fmt.Fprintf(g.stdout, "no changes; workspace is at revision %d, which matches revision %d\n", out.Revision, c.Revision)
	} else {
		if err := printChanges(g.stdout, out.Diff); err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "\n%s\nrolled back to revision %d as revision %d\n",
			changeSummary(out.Diff, "", "created", "changed", "removed"), c.Revision, out.Revision)
	}
	switch {
	case c.NoWait:
		return nil
	case !out.Changed:
		return r.check(ctx)
	}
	return r.wait(ctx, c.Timeout)
}
