package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/internal/ports"
	"github.com/nxmesh/nxmesh/pki"
)

// minCertLife is how long a cached certificate must still be valid to be
// used again: far beyond any run, so none expires in the middle of one.
const minCertLife = 2 * time.Hour

// cluster is the hub and the relays of a run, each a child process of the
// nxmesh binary, on loopback ports chosen at start.
type cluster struct {
	cfg       *Config
	hub       *proc
	hubDir    string
	apiAddr   string // host:port of the REST API
	agentAddr string // host:port of the hub's mTLS listener (relays)
	rootPEM   []byte
	roots     *x509.CertPool
	api       *hubAPI
	relays    []*relayProc
}

// relayProc is one relay: its process, its listen address (kept across
// restarts) and its state directory.
type relayProc struct {
	*proc
	id   string
	addr string
	dir  string
}

// agentURL is where agents dial this relay.
func (r *relayProc) agentURL() string { return "wss://" + r.addr + "/v1/agent" }

// freeAddr is a loopback address whose port was free a moment ago, below
// the ephemeral range the agents' connections draw their source ports
// from (ports.Free).
func freeAddr() (string, error) {
	p, err := ports.Free()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// profiled gives p a loopback pprof address when the run profiles.
func (p *proc) profiled(cfg *Config) error {
	if cfg.ProfileDir == "" {
		return nil
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	p.debugAddr = addr
	p.args = append(p.args, "--debug-addr", addr)
	return nil
}

// startHub starts the hub on the data directory in the work directory,
// logs in as admin and returns the cluster with no relay yet.
func startHub(ctx context.Context, cfg *Config) (*cluster, error) {
	c := &cluster{cfg: cfg, hubDir: filepath.Join(cfg.WorkDir, "hub")}
	var err error
	if c.apiAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	if c.agentAddr, err = freeAddr(); err != nil {
		return nil, err
	}
	args := []string{"hub", "--data-dir", c.hubDir, "--api-addr", c.apiAddr, "--agent-addr", c.agentAddr, "--log-level", "info"}
	if cfg.DatabaseURL != "" {
		args = append(args, "--database-url", cfg.DatabaseURL)
	}
	c.hub = &proc{name: "hub", bin: cfg.Binary, args: args, logPath: filepath.Join(cfg.WorkDir, "logs", "hub.log")}
	if err := c.hub.profiled(cfg); err != nil {
		return nil, err
	}
	if err := c.hub.start(); err != nil {
		return nil, err
	}
	if err := c.waitHub(ctx); err != nil {
		c.stop()
		return nil, err
	}
	return c, nil
}

// waitHub waits for the hub's root certificate and API, then logs in.
func (c *cluster) waitHub(ctx context.Context) error {
	rootPath := filepath.Join(c.hubDir, "ca", "root.pem")
	err := waitFor(ctx, time.Minute, 50*time.Millisecond, "hub to answer", func() (bool, error) {
		select {
		case <-c.hub.exited():
			return false, c.hub.exitErr()
		default:
		}
		if c.api == nil {
			pem, err := os.ReadFile(rootPath)
			if err != nil {
				return false, nil // not created yet
			}
			api, err := newHubAPI("https://"+c.apiAddr, pem, c.cfg.Enrollers+2)
			if err != nil {
				return false, nil // half written
			}
			c.rootPEM, c.api = pem, api
		}
		return c.api.do(ctx, "GET", "/healthz", nil, nil) == nil, nil
	})
	if err != nil {
		return err
	}
	c.roots = x509.NewCertPool()
	c.roots.AppendCertsFromPEM(c.rootPEM)
	pw, err := os.ReadFile(filepath.Join(c.hubDir, "initial-admin-password"))
	if err != nil {
		return fmt.Errorf("hub admin password: %w", err)
	}
	return c.api.login(ctx, "admin", strings.TrimSpace(string(pw)))
}

// startRelays enrolls the relays that have no usable identity in the work
// directory yet, starts all of them and waits until each holds a session
// to the hub. It returns how many were enrolled.
func (c *cluster) startRelays(ctx context.Context) (enrolled int, err error) {
	for i := range c.cfg.Relays {
		name := "relay-" + strconv.Itoa(i+1)
		dir := filepath.Join(c.cfg.WorkDir, "relays", name)
		id, ok := c.relayIdentity(dir)
		if !ok {
			if err := os.RemoveAll(dir); err != nil {
				return enrolled, err
			}
			if err := c.enrollRelay(ctx, dir); err != nil {
				return enrolled, fmt.Errorf("enroll %s: %w", name, err)
			}
			enrolled++
			if id, ok = c.relayIdentity(dir); !ok {
				return enrolled, fmt.Errorf("enroll %s: no usable certificate in %s", name, dir)
			}
		}
		addr, err := freeAddr()
		if err != nil {
			return enrolled, err
		}
		args := []string{"relay", "run", "--hubs", "wss://" + c.agentAddr + "/v1/relay", "--listen", addr,
			"--state-dir", dir, "--heartbeat-interval", c.cfg.HeartbeatInterval.String(), "--log-level", "info"}
		r := &relayProc{
			proc: &proc{name: name, bin: c.cfg.Binary, args: args, logPath: filepath.Join(c.cfg.WorkDir, "logs", name+".log")},
			id:   id, addr: addr, dir: dir,
		}
		if err := r.profiled(c.cfg); err != nil {
			return enrolled, err
		}
		if err := r.start(); err != nil {
			return enrolled, err
		}
		c.relays = append(c.relays, r)
	}
	for _, r := range c.relays {
		if err := c.waitListening(ctx, r); err != nil {
			return enrolled, err
		}
	}
	// The hub counts its own embedded relay too.
	want := float64(len(c.relays) + 1)
	err = waitFor(ctx, time.Minute, 50*time.Millisecond, "relays to connect to the hub", func() (bool, error) {
		n, err := c.api.metric(ctx, "nxmesh_fleet_relays")
		return err == nil && n >= want, nil
	})
	return enrolled, err
}

// relayIdentity is the id of the relay whose state is in dir, if its
// certificate chains to this hub's root and stays valid long enough.
func (c *cluster) relayIdentity(dir string) (string, bool) {
	files := pki.Files{Dir: dir, Role: pki.RoleRelay}
	cert, err := files.LoadKeyPair()
	if err != nil || cert.Leaf == nil || time.Until(cert.Leaf.NotAfter) < minCertLife {
		return "", false
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(ic)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: c.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "", false
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil {
		return "", false
	}
	return id.ID, true
}

// enrollRelay runs `nxmesh relay enroll` into dir.
func (c *cluster) enrollRelay(ctx context.Context, dir string) error {
	token, err := c.api.enrollmentToken(ctx, "relay", 1, nil)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, c.cfg.Binary, "relay", "enroll", "--hub", "https://"+c.apiAddr, "--state-dir", dir)
	// The token goes in the environment, not on a command line others can
	// read.
	cmd.Env = append(childEnv(), "NXMESH_ENROLL_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waitListening waits until the relay accepts TCP connections.
func (c *cluster) waitListening(ctx context.Context, r *relayProc) error {
	return waitFor(ctx, 30*time.Second, 20*time.Millisecond, r.name+" to listen on "+r.addr, func() (bool, error) {
		select {
		case <-r.exited():
			return false, r.exitErr()
		default:
		}
		conn, err := net.DialTimeout("tcp", r.addr, time.Second)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
}

// procs are the processes the bench samples, by name.
func (c *cluster) procs() []*proc {
	ps := []*proc{c.hub}
	for _, r := range c.relays {
		ps = append(ps, r.proc)
	}
	return ps
}

// checkAlive returns an error naming the first daemon that has exited.
func (c *cluster) checkAlive() error {
	for _, p := range c.procs() {
		if done := p.exited(); done != nil {
			select {
			case <-done:
				return p.exitErr()
			default:
			}
		}
	}
	return nil
}

// stop ends the relays, then the hub, gracefully.
func (c *cluster) stop() {
	for _, r := range c.relays {
		r.terminate()
	}
	if c.hub != nil {
		c.hub.terminate()
	}
}
