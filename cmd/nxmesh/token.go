package main

import (
	"context"
	"fmt"
	"net/url"
	"time"
)

type tokenCmd struct {
	Create tokenCreateCmd `cmd:"" help:"Create an enrollment token for agents or relays."`
}

type tokenCreateCmd struct {
	hubFlags `embed:""`

	Workspace string            `help:"Workspace the enrolled agents join (relay tokens belong to no workspace)." default:"default"`
	Role      string            `help:"Role of the enrolled process: agent or relay." enum:"agent,relay" default:"agent"`
	Labels    map[string]string `mapsep:"," placeholder:"K=V,..." help:"Labels the enrolled agents get."`
	TTL       time.Duration     `help:"How long the token can be redeemed." default:"1h"`
	Uses      int               `help:"How many enrollments the token allows; each gets its own identity." default:"1"`
}

func (c *tokenCreateCmd) Help() string {
	return "Prints the token alone on standard output, so that it can be captured: TOKEN=$(nxmesh token create ...). Its expiry and the CA fingerprint it pins go to standard error."
}

func (c *tokenCreateCmd) Run(ctx context.Context, g *Globals) error {
	api, err := newAPIClient(c.hubFlags, true)
	if err != nil {
		return err
	}
	var out struct {
		Token         string    `json:"token"`
		ExpiresAt     time.Time `json:"expiresAt"`
		CAFingerprint string    `json:"caFingerprint"`
	}
	in := map[string]any{"role": c.Role, "labels": c.Labels, "ttl": c.TTL.String(), "uses": c.Uses}
	if err := api.do(ctx, "POST", "/api/v1/workspaces/"+url.PathEscape(c.Workspace)+"/enrollment-tokens", in, &out); err != nil {
		return err
	}
	fmt.Fprintln(g.stdout, out.Token)
	fmt.Fprintf(g.stderr, "%s token for %d use(s), expires %s, pins CA %s\n", c.Role, c.Uses, out.ExpiresAt.Local().Format(time.RFC3339), out.CAFingerprint)
	return nil
}
