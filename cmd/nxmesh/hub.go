package main

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/nxmesh/nxmesh/hub"
)

type hubCmd struct {
	DataDir       string `help:"Directory for the SQLite database, the generated secret key, ca/root.pem and the initial admin password." default:"/var/lib/nxmesh" type:"path"`
	APIAddr       string `help:"HTTPS listen address of the REST API." default:":8443"`
	AgentAddr     string `help:"mTLS listen address for agents and relays." default:":8444"`
	MaxHandshakes int    `help:"TLS handshakes in progress at once on the agent listener; more connections wait, accepted, for their turn (docs/relay.md, Reconnect storms)." default:"512"`
	DatabaseURL   string `help:"postgres:// or cockroach:// URL shared by all hubs; default: SQLite in the data directory."`
	SecretKeyFile string `help:"File holding the 32-byte CA secret key (hex or base64, mode 0600); every hub needs the same key. Default: DATA_DIR/secret.key, generated on first start." type:"path"`
	SecretKey     string `help:"The CA secret key itself; prefer NXMESH_SECRET_KEY to the flag, which other users can see." hidden:""`
	TrustDomain   string `help:"Trust domain of the installation, the host part of every identity." default:"nxmesh.local"`
	HubID         string `help:"This hub's id in its certificate; default: kept in DATA_DIR/hub-id."`
	debugFlags    `embed:""`
}

func (c *hubCmd) Help() string {
	return `Runs a hub until interrupted. On first start it creates the certificate authority, the default workspace and the user admin, whose password is written to DATA_DIR/initial-admin-password.

Every hub of an installation must be given the same secret key; a hub given another key refuses to start and changes nothing.`
}

func (c *hubCmd) Run(ctx context.Context, g *Globals) error {
	s, err := hub.New(ctx, hub.Config{
		DataDir: c.DataDir, APIAddr: c.APIAddr, AgentAddr: c.AgentAddr, MaxHandshakes: c.MaxHandshakes, DatabaseURL: c.DatabaseURL,
		SecretKeyFile: c.SecretKeyFile, SecretKey: c.SecretKey, TrustDomain: c.TrustDomain, HubID: c.HubID,
		Logger: g.Logger(), Console: g.stderr,
	})
	if err != nil {
		return err
	}
	defer s.Close()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return s.Run(ctx) })
	eg.Go(func() error { return c.serveDebug(ctx, g.Logger()) })
	return eg.Wait()
}
