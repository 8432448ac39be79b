package main

import (
	"context"
	"fmt"
	"net/url"
)

type deleteCmd struct {
	Agent deleteAgentCmd `cmd:"" help:"Delete an agent and revoke its certificates."`
}

type deleteAgentCmd struct {
	workspaceFlags `embed:""`

	ID string `arg:"" help:"The agent's ID, as nxmesh get agents shows it."`
}

func (c *deleteAgentCmd) Help() string {
	return "Removes the agent from the workspace, revokes every certificate issued to it and cuts its live session, so that it can neither reconnect nor renew. Its nginx keeps serving the last configuration it applied. To bring the machine back, enroll it again with a new token."
}

func (c *deleteAgentCmd) Run(ctx context.Context, g *Globals) error {
	return loginHint(c.run(ctx, g))
}

func (c *deleteAgentCmd) run(ctx context.Context, g *Globals) error {
	api, err := newAPIClient(c.hubFlags, true)
	if err != nil {
		return err
	}
	if err := api.do(ctx, "DELETE", c.path()+"/agents/"+url.PathEscape(c.ID), nil, nil); err != nil {
		return err
	}
	_, err = fmt.Fprintf(g.stdout, "agent %s deleted; its certificates are revoked\n", c.ID)
	return err
}
