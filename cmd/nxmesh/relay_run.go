package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/relay"
)

type relayRunCmd struct {
	debugFlags `embed:""`

	Hubs     []string `help:"wss:// URLs of the hubs' /v1/relay endpoint, comma-separated." required:"" sep:","`
	Listen   string   `help:"Address agents connect to (mTLS WebSocket /v1/agent)." default:":7443"`
	StateDir string   `help:"Relay state directory (from relay enroll): key, certificate, root.pem, bundle cache." required:"" type:"path"`
	RenewURL string   `help:"A hub's agent listener (https://hub:8444): renew the certificate there at two thirds of its life. Without it the relay runs until its certificate expires."`

	HeartbeatInterval time.Duration `help:"How often agents send a heartbeat (told in Welcome); an agent silent for three intervals is dropped." default:"15s"`
	MaxHandshakes     int           `help:"TLS handshakes in progress at once; more connections wait, accepted, for their turn (docs/relay.md, Reconnect storms)." default:"512"`
}

func (c *relayRunCmd) Help() string {
	return `Loads the identity from --state-dir, serves agents on --listen and keeps one session to one of --hubs (failing over with exponential backoff). Bundles and the desired assignment of every agent are cached in --state-dir, so agents get their last desired configuration even while every hub is down.

With --renew-url the certificate renews itself over mTLS before it expires and the new chain is written to --state-dir.`
}

func (c *relayRunCmd) Run(ctx context.Context, g *Globals) error {
	var tuner *gcTuner
	var fanOut func(int)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(relayGCPercent)
		tuner = newGCTuner(func(p int) { debug.SetGCPercent(p) }, debug.FreeOSMemory, time.Now)
		fanOut = tuner.onFanOut
	}
	files := pki.Files{Dir: c.StateDir, Role: pki.RoleRelay}
	cert, err := files.LoadKeyPair()
	if err != nil {
		return err
	}
	root, err := files.LoadRoot("")
	if err != nil {
		return err
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil {
		return err
	}
	if id.Role != pki.RoleRelay {
		return fmt.Errorf("%s is a %s certificate, not a relay certificate", files.CertPath(), id.Role)
	}
	src, err := pki.NewSource(cert)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	s, err := relay.New(relay.Config{
		Listen:      c.Listen,
		Hubs:        c.Hubs,
		StateDir:    c.StateDir,
		Source:      src,
		TrustDomain: id.TrustDomain,
		Roots:       roots,

		HeartbeatInterval: c.HeartbeatInterval,
		MaxHandshakes:     c.MaxHandshakes,
		Version:           version,
		FanOut:            fanOut,
		Logger:            g.Logger(),
	})
	if err != nil {
		return err
	}
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return s.Run(ctx) })
	eg.Go(func() error { return c.serveDebug(ctx, g.Logger()) })
	if tuner != nil {
		tuner.counts = func() (int64, int64) { return gcCounts(s.Stats()) }
		eg.Go(func() error { tuner.runTicking(ctx); return nil })
	}
	if c.RenewURL != "" {
		renewer := &pki.Renewer{
			Source:  src,
			Renew:   pki.HTTPSRenewFunc(c.RenewURL, pki.Peer{TrustDomain: id.TrustDomain, Roots: roots}),
			Logger:  g.Logger(),
			OnRenew: files.WriteRenewed,
		}
		eg.Go(func() error { return renewer.Run(ctx) })
	}
	return eg.Wait()
}
