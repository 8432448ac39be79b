package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/pki"
)

// RunConfig configures the agent daemon (`nxmesh agent run`).
type RunConfig struct {
	// StateDir holds agent.key, agent.crt, root.pem (from enrollment) and
	// the releases; it is nginx's -p prefix.
	StateDir string
	// Relays are the wss:// URLs of relays' (or hubs') /v1/agent.
	Relays []string
	// NginxBinary is the nginx to run; empty means look it up.
	NginxBinary string
	// StatusListen is the status server address of the bundles
	// (default nginx.DefaultStatusListen).
	StatusListen string
	// RenewURL is a hub's mTLS listener (https://hub:8444); the
	// certificate is renewed there at two thirds of its life, and the new
	// chain is written to StateDir. Empty: no renewal.
	RenewURL string
	// RootPin, when set, is the expected root fingerprint.
	RootPin string
	// StaleStopTimeout bounds the graceful stop of a stale nginx group
	// before it is killed (default 10 s).
	StaleStopTimeout time.Duration
	// Version is reported to the relay.
	Version string
	// OnResult, when set, is called with the outcome of every apply after
	// it was reported upstream (metrics, tests).
	OnResult func(Result)
	Logger   *slog.Logger
}

// Run is the agent daemon: it loads the identity from StateDir, stops an
// nginx group a previous (killed) agent left behind, recovers the state
// directory, (re)starts the managed nginx on the live tree and runs the
// relay Session and the apply Loop until ctx ends; then it stops nginx.
// With RenewURL it also renews its certificate before it expires.
func Run(ctx context.Context, cfg RunConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir == "" || len(cfg.Relays) == 0 {
		return errors.New("agent run: state dir and at least one relay are required")
	}
	for _, r := range cfg.Relays {
		if !strings.HasPrefix(r, "wss://") {
			return fmt.Errorf("agent run: relay URL %q must start with wss://", r)
		}
	}
	if cfg.StatusListen == "" {
		cfg.StatusListen = nginx.DefaultStatusListen
	}
	if cfg.StaleStopTimeout <= 0 {
		cfg.StaleStopTimeout = 10 * time.Second
	}
	files := pki.Files{Dir: cfg.StateDir, Role: pki.RoleAgent}
	cert, err := files.LoadKeyPair()
	if err != nil {
		return fmt.Errorf("agent run: %w", err)
	}
	root, err := files.LoadRoot(cfg.RootPin)
	if err != nil {
		return fmt.Errorf("agent run: %w", err)
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil || id.Role != pki.RoleAgent {
		return fmt.Errorf("agent run: %s is not an agent certificate (%v)", files.CertPath(), err)
	}
	src, err := pki.NewSource(cert)
	if err != nil {
		return fmt.Errorf("agent run: %w", err)
	}
	roots := x509Pool(root)
	tlsCfg, err := pki.ClientTLSConfig(src, pki.Peer{TrustDomain: id.TrustDomain, Roots: roots, Roles: []pki.Role{pki.RoleRelay, pki.RoleHub}})
	if err != nil {
		return fmt.Errorf("agent run: %w", err)
	}
	// Reconnects resume the TLS session: far cheaper for a relay that
	// thousands of agents reconnect to at once.
	tlsCfg.ClientSessionCache = tls.NewLRUClientSessionCache(len(cfg.Relays))
	var bin *nginx.Binary
	if cfg.NginxBinary != "" {
		bin = &nginx.Binary{Path: cfg.NginxBinary}
	} else if bin, err = nginx.FindBinary(); err != nil {
		return fmt.Errorf("agent run: %w", err)
	}
	if err := StopStaleNginx(ctx, cfg.StateDir, cfg.StaleStopTimeout, log); err != nil {
		return fmt.Errorf("agent run: %w", err)
	}
	child := nginx.NewChild(bin, cfg.StateDir, filepath.Join(cfg.StateDir, "current", "nginx.conf"))
	defer func() { _ = child.Stop(context.Background()) }()
	applier, err := New(Config{
		StateDir:  cfg.StateDir,
		Binary:    bin,
		Reloader:  child,
		StatusURL: "http://" + cfg.StatusListen,
		Logger:    log,
	})
	if err != nil {
		return fmt.Errorf("agent run: %w", err)
	}
	// Recover reloads (for a Child: starts) nginx when it does not serve
	// the live generation, so a live tree is served from here on.
	rec, err := applier.Recover(ctx)
	if err != nil {
		log.Error("recovery could not bring nginx up on the live tree", "err", err)
	} else {
		log.Info("recovered", "live", short(rec.Live), "outcome", rec.Outcome)
	}
	sess := &Session{
		Relays:  cfg.Relays,
		TLS:     tlsCfg,
		Applier: applier,
		Kept:    applier,
		Version: cfg.Version,
		Logger:  log,
		NginxUp: func() bool { _, err := child.PID(); return err == nil },
	}
	report := sess.Report
	if cfg.OnResult != nil {
		report = func(r Result) { sess.Report(r); cfg.OnResult(r) }
	}
	loop := NewLoop(applier.Apply, nil, report)
	sess.Loop = loop
	log.Info("agent running", "id", id.ID, "workspace", id.Workspace, "relays", len(cfg.Relays))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return loop.Run(gctx) })
	g.Go(func() error { return sess.Run(gctx) })
	if cfg.RenewURL != "" {
		renewer := &pki.Renewer{
			Source: src,
			Renew:  pki.HTTPSRenewFunc(cfg.RenewURL, pki.Peer{TrustDomain: id.TrustDomain, Roots: roots}),
			Logger: log,
			// New connections use the renewed certificate at once; the file
			// is for the next start.
			OnRenew: files.WriteRenewed,
		}
		g.Go(func() error { return renewer.Run(gctx) })
	}
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// StopStaleNginx stops an nginx process group left behind by a previous
// agent that was SIGKILLed: Pdeathsig killed its master, but the workers
// keep the listening sockets. The group is found through
// <stateDir>/nginx.pid (the master's pid, which is the group id because the
// agent starts nginx with Setpgid). Only processes of that group whose
// /proc/<pid>/cmdline is nginx are signalled: SIGQUIT first, SIGKILL after
// timeout. A missing pid file or an empty group is not an error.
func StopStaleNginx(ctx context.Context, stateDir string, timeout time.Duration, log *slog.Logger) error {
	data, err := os.ReadFile(filepath.Join(stateDir, "nginx.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stale nginx: %w", err)
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pgid <= 1 {
		return nil // not a pid: nothing we may signal
	}
	pids := nginx.GroupProcesses(pgid)
	if len(pids) == 0 {
		return nil
	}
	if log != nil {
		log.Warn("stopping a stale nginx group left by a previous agent", "pgid", pgid, "pids", pids)
	}
	signal := func(sig syscall.Signal) {
		for _, pid := range nginx.GroupProcesses(pgid) {
			_ = syscall.Kill(pid, sig)
		}
	}
	signal(syscall.SIGQUIT)
	deadline := time.Now().Add(timeout)
	for len(nginx.GroupProcesses(pgid)) > 0 {
		if time.Now().After(deadline) || ctx.Err() != nil {
			signal(syscall.SIGKILL)
			break
		}
		time.Sleep(20 * time.Millisecond) // polling /proc; bounded by the deadline
	}
	// SIGKILL is not instant: wait (bounded) until the sockets are free.
	for end := time.Now().Add(5 * time.Second); len(nginx.GroupProcesses(pgid)) > 0 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if left := nginx.GroupProcesses(pgid); len(left) > 0 {
		return fmt.Errorf("stale nginx group %d still has processes %v", pgid, left)
	}
	return nil
}

func x509Pool(root *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(root)
	return p
}
