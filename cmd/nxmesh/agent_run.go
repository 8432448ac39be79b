package main

import (
	"context"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/nginx"
)

type agentRunCmd struct {
	StateDir     string   `help:"Agent state directory (from agent enroll): key, certificate, root.pem and releases." required:"" type:"path"`
	Relays       []string `help:"wss:// URLs of relays' (or hubs') /v1/agent endpoint, comma-separated." required:"" sep:","`
	StatusListen string   `help:"Address of the bundles' nginx status server, used to verify reloads." default:"127.0.0.1:8765"`
	Nginx        string   `help:"nginx binary; default: found on PATH." type:"path"`
	RenewURL     string   `help:"A hub's agent listener (https://hub:8444): renew the certificate there at two thirds of its life. Without it the agent runs until its certificate expires."`
}

func (c *agentRunCmd) Help() string {
	return `Loads the identity from --state-dir, stops an nginx left behind by a previous agent that was killed, recovers the last good configuration and starts nginx on it, then connects to one of --relays (failing over with exponential backoff) and applies the bundles it is sent. While no relay answers, nginx keeps serving the last good configuration.

With --renew-url the certificate renews itself over mTLS before it expires and the new chain is written to --state-dir.`
}

func (c *agentRunCmd) Run(ctx context.Context, g *Globals) error {
	listen := c.StatusListen
	if listen == "" {
		listen = nginx.DefaultStatusListen
	}
	return agent.Run(ctx, agent.RunConfig{
		StateDir:     c.StateDir,
		Relays:       c.Relays,
		NginxBinary:  c.Nginx,
		StatusListen: listen,
		RenewURL:     c.RenewURL,
		Version:      version,
		Logger:       g.Logger(),
	})
}
