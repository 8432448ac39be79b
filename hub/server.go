package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nxmesh/nxmesh/hub/fleet"
	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/pki/ca"
	"github.com/nxmesh/nxmesh/relay"
)

// Server is one hub: the REST API on HTTPS and the mTLS listener agents and
// relays renew their certificates on. Create it with New, serve with Run,
// release it with Close.
type Server struct {
	cfg   Config
	log   *slog.Logger
	db    *store.DB
	ca    *ca.CA
	id    string
	hosts []string // SANs of the serving certificate
	src   *pki.Source

	// fleet holds the relay sessions and pushes desired bundles.
	fleet *fleet.Fleet
	// relay is the embedded relay: agents connect to the hub's agent
	// listener directly, and it talks to this hub's /v1/relay over
	// loopback like any other relay.
	relay    *relay.Server
	relaySrc *pki.Source
	// metrics serves GET /metrics.
	metrics http.Handler

	apiLn, agentLn net.Listener
}

// New opens the store and the CA, prepares the data directory on first
// start and binds both listeners. It refuses, changing nothing, a secret key
// that does not open the CA in the database, and a key file that group or
// others can read.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	key, err := cfg.loadSecretKey()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log}
	db, err := store.Open(ctx, store.Config{URL: cfg.databaseURL(), Now: cfg.Clock, Logger: log, SecretKey: key.key,
		OnRevision: func(ws string, _ int64) {
			if s.fleet != nil {
				s.fleet.Notify(ws)
			}
		}})
	if err != nil {
		return nil, err
	}
	s.db = db
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	if key.generated {
		// Only write a fresh key when there is no CA yet: an existing CA
		// was sealed with some other key, and writing ours would leave a
		// wrong key file behind.
		switch _, gerr := db.GetCA(ctx); {
		case gerr == nil:
			return nil, fmt.Errorf("the database already holds a certificate authority, but no secret key was given: "+
				"start this hub with the key the others use (--secret-key-file or NXMESH_SECRET_KEY), or put it in %s", key.path)
		case !errors.Is(gerr, store.ErrNotFound):
			return nil, gerr
		}
		if err := writeSecretKey(key.path, key.key); err != nil {
			return nil, err
		}
		log.Warn("no secret key given: generated one; back it up, and give the same key to every other hub "+
			"(--secret-key-file or NXMESH_SECRET_KEY), or the CA cannot be opened", "file", key.path)
	}

	s.ca, err = ca.Open(ctx, ca.Config{
		TrustDomain: cfg.TrustDomain, Storage: caStorage{db}, KEK: key.key,
		Clock: cfg.Clock, Logger: log, CertLifetime: cfg.CertLifetime,
	})
	if err != nil {
		if errors.Is(err, ca.ErrWrongKey) && key.path != "" {
			return nil, fmt.Errorf("secret key from %s: %w", key.path, err)
		}
		return nil, err
	}
	// The key opened the CA, so it is the installation's: private keys
	// that older hubs stored in the clear can now be sealed under it.
	if n, err := db.SealClearSecrets(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		log.Info("sealed private keys stored in the clear", "rows", n)
	}
	if err := s.firstStart(ctx); err != nil {
		return nil, err
	}
	if s.id, err = cfg.hubID(); err != nil {
		return nil, err
	}
	if s.apiLn, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		return nil, fmt.Errorf("api listener: %w", err)
	}
	if s.agentLn, err = net.Listen("tcp", cfg.AgentAddr); err != nil {
		return nil, fmt.Errorf("agent listener: %w", err)
	}
	s.hosts = certHosts(cfg.APIAddr, cfg.AgentAddr)
	cert, err := s.ca.IssueHub(ctx, s.id, s.hosts)
	if err != nil {
		return nil, err
	}
	if s.src, err = pki.NewSource(cert); err != nil {
		return nil, err
	}
	if s.fleet, err = fleet.New(fleet.Config{DB: db, HubID: s.id, TrustDomain: cfg.TrustDomain, Now: cfg.Clock, Logger: log}); err != nil {
		return nil, err
	}
	if err := s.newEmbeddedRelay(ctx); err != nil {
		return nil, err
	}
	s.metrics = s.metricsHandler()
	log.Info("hub ready", "hub_id", s.id, "api", s.APIURL(), "agents", s.AgentURL(),
		"trust_domain", cfg.TrustDomain, "root_fingerprint", s.ca.Fingerprint())
	return s, nil
}

// firstStart creates what a new installation needs and is a no-op on later
// starts: the default organization and workspace, the admin user (its
// random password goes to DATA_DIR/initial-admin-password and, once, to the
// console) and ca/root.pem.
func (s *Server) firstStart(ctx context.Context) error {
	if _, err := s.db.EnsureDefault(ctx); err != nil {
		return err
	}
	if _, err := s.db.GetUser(ctx, "admin"); errors.Is(err, store.ErrNotFound) {
		password, _, err := newSecretToken("")
		if err != nil {
			return err
		}
		hash, err := hashPassword(password)
		if err != nil {
			return err
		}
		switch _, err := s.db.CreateUser(ctx, store.User{Name: "admin", PasswordHash: hash}); {
		case errors.Is(err, store.ErrConflict):
			// another hub created it first
		case err != nil:
			return err
		default:
			path := filepath.Join(s.cfg.DataDir, "initial-admin-password")
			if err := os.WriteFile(path, []byte(password+"\n"), 0o600); err != nil {
				return fmt.Errorf("write initial admin password: %w", err)
			}
			// Shown once, on the start that created the user, on the
			// console and never in the log, which may be shipped elsewhere.
			s.log.Warn("created user admin; its initial password is in the file", "file", path)
			if s.cfg.Console != nil {
				fmt.Fprintf(s.cfg.Console, "initial admin password (also in %s): %s\n", path, password)
			}
		}
	} else if err != nil {
		return err
	}
	dir := filepath.Join(s.cfg.DataDir, "ca")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "root.pem"), s.ca.RootPEM(), 0o644)
}

// certHosts returns the DNS names and IPs the serving certificate names: the
// listen hosts, or this machine's names when a listener is on all
// interfaces.
func certHosts(addrs ...string) []string {
	var hosts []string
	seen := map[string]bool{}
	add := func(h string) {
		if h != "" && !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	for _, a := range addrs {
		h, _, _ := net.SplitHostPort(a)
		if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
			if name, err := os.Hostname(); err == nil {
				add(name)
			}
			add("localhost")
			add("127.0.0.1")
			add("::1")
			continue
		}
		add(h)
	}
	return hosts
}

// APIURL is the base URL of the REST API, with the bound port.
func (s *Server) APIURL() string { return "https://" + urlHost(s.apiLn.Addr()) }

// AgentURL is the base URL of the mTLS listener, with the bound port.
func (s *Server) AgentURL() string { return "https://" + urlHost(s.agentLn.Addr()) }

func urlHost(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if ta.IP.IsUnspecified() {
		return net.JoinHostPort("localhost", fmt.Sprint(ta.Port))
	}
	return net.JoinHostPort(ta.IP.String(), fmt.Sprint(ta.Port))
}

// RootFingerprint is the SHA-256 fingerprint of the trust domain's root.
func (s *Server) RootFingerprint() string { return s.ca.Fingerprint() }

// RootPEM is the trust domain's root certificate.
func (s *Server) RootPEM() []byte { return s.ca.RootPEM() }

// Store returns the hub's store (tests and later milestones).
func (s *Server) Store() *store.DB { return s.db }

// Close releases the listeners and the store. Call it after Run returned,
// or instead of Run.
func (s *Server) Close() error {
	var errs []error
	for _, l := range []net.Listener{s.apiLn, s.agentLn} {
		if l != nil {
			if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
	}
	return errors.Join(errs...)
}

// shutdownGrace bounds how long Run waits for requests in flight.
const shutdownGrace = 5 * time.Second

// Run serves the API and the agent listener until ctx ends, keeping the
// hub's own certificate renewed, and returns once both servers and the
// renewer have stopped.
func (s *Server) Run(ctx context.Context) error {
	agentTLS, err := pki.ServerTLSConfig(s.src, pki.Peer{
		TrustDomain: s.cfg.TrustDomain,
		Roots:       s.ca.Roots(),
		Roles:       []pki.Role{pki.RoleAgent, pki.RoleRelay},
		IsRevoked: func(serial string) (bool, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return s.ca.IsRevoked(ctx, serial)
		},
		Time: s.cfg.Clock,
	})
	if err != nil {
		return err
	}
	apiTLS := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: s.src.GetCertificate}
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelDebug) // TLS handshake noise
	servers := []*http.Server{
		{Handler: s.apiRoutes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog},
		{Handler: s.agentRoutes(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: errLog},
	}
	// The agent listener admits handshakes as a relay's does: a storm of
	// agents reconnecting to the hub waits its turn instead of timing out.
	agentLn, connState := s.relay.LimitHandshakes(s.agentLn)
	servers[1].ConnState = connState
	listeners := []net.Listener{tls.NewListener(s.apiLn, apiTLS), tls.NewListener(agentLn, agentTLS)}

	g, gctx := errgroup.WithContext(ctx)
	for i, srv := range servers {
		g.Go(func() error {
			if err := srv.Serve(listeners[i]); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		var errs []error
		for _, srv := range servers {
			errs = append(errs, srv.Shutdown(sctx))
		}
		return errors.Join(errs...)
	})
	g.Go(func() error { s.keepCertificate(gctx, s.src, s.issueHub); return nil })
	g.Go(func() error { s.keepCertificate(gctx, s.relaySrc, s.issueRelay); return nil })
	g.Go(func() error { return s.fleet.Run(gctx) })
	g.Go(func() error { return s.relay.Run(gctx) })
	return g.Wait()
}

// embeddedRelayID is the relay id of a hub's embedded relay.
func embeddedRelayID(hubID string) string { return "hub-" + hubID }

func (s *Server) issueHub(ctx context.Context) (tls.Certificate, error) {
	return s.ca.IssueHub(ctx, s.id, s.hosts)
}

func (s *Server) issueRelay(ctx context.Context) (tls.Certificate, error) {
	id := pki.Identity{TrustDomain: s.cfg.TrustDomain, Role: pki.RoleRelay, ID: embeddedRelayID(s.id)}
	return s.ca.IssueLocal(ctx, id, nil)
}

// newEmbeddedRelay makes the relay that serves agents on the hub's own
// agent listener. Its bundle cache is DATA_DIR/relay.
func (s *Server) newEmbeddedRelay(ctx context.Context) error {
	cert, err := s.issueRelay(ctx)
	if err != nil {
		return err
	}
	if s.relaySrc, err = pki.NewSource(cert); err != nil {
		return err
	}
	s.relay, err = relay.New(relay.Config{
		Mounted:       true,
		Hubs:          []string{"wss://" + urlHost(s.agentLn.Addr()) + "/v1/relay"},
		StateDir:      filepath.Join(s.cfg.DataDir, "relay"),
		Source:        s.relaySrc,
		TrustDomain:   s.cfg.TrustDomain,
		Roots:         s.ca.Roots(),
		MinBackoff:    100 * time.Millisecond,
		MaxBackoff:    2 * time.Second,
		MaxHandshakes: s.cfg.MaxHandshakes,
		Logger:        s.log.With("component", "embedded-relay"),
	})
	return err
}

// keepCertificate renews a certificate of the hub process (its serving
// certificate, its embedded relay's) through the CA until ctx ends; should
// renewal become impossible (the certificate expired while the clock
// jumped, say) it issues a new one.
func (s *Server) keepCertificate(ctx context.Context, src *pki.Source, issue func(context.Context) (tls.Certificate, error)) {
	for {
		r := &pki.Renewer{Source: src, Renew: s.ca.RenewFunc(), Clock: hubClock{s.cfg.Clock}, Logger: s.log}
		err := r.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("certificate renewal stopped; issuing a new certificate", "err", err)
		cert, err := issue(ctx)
		if err == nil {
			err = src.Store(cert)
		}
		if err != nil {
			s.log.Error("issue certificate", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Second):
			}
		}
	}
}

// hubClock is pki.Clock on the configured time source.
type hubClock struct{ now func() time.Time }

func (c hubClock) Now() time.Time                         { return c.now() }
func (c hubClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
