package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/nxmesh/nxmesh/hub"
	"github.com/nxmesh/nxmesh/hub/fleet"
	"github.com/nxmesh/nxmesh/pki"
)

type demoCmd struct {
	DataDir      string `help:"Directory for the demo's hub, relay and agent state; kept between runs." default:"nxmesh-demo" type:"path"`
	Fresh        bool   `help:"Delete --data-dir first and start over."`
	APIAddr      string `help:"HTTPS address of the hub's REST API." default:"127.0.0.1:9443"`
	AgentAddr    string `help:"mTLS address of the hub for relays and agents." default:"127.0.0.1:9444"`
	RelayAddr    string `help:"mTLS address of the relay for agents." default:"127.0.0.1:9445"`
	Port         int    `help:"Port the demo site is served on by nginx." default:"8080"`
	StatusPort   int    `help:"Loopback port of the agent's nginx status server." default:"8766"`
	UpstreamAddr string `help:"Address of the built-in upstream the site proxies to." default:"127.0.0.1:9090"`
}

func (c *demoCmd) Help() string {
	return `Runs a whole NxMesh on this machine: a hub (SQLite in --data-dir), a relay, an agent managing a real nginx, and a small built-in upstream. It applies a sample site, waits until nginx serves it, and prints the API address, the admin password and a curl line that works. Everything stops on Ctrl-C.

The next run resumes from --data-dir: same certificates, admin password and revisions (the sample site is applied on the first run only). --fresh starts over. Components log to DATA_DIR/demo.log.`
}

// demoHost is the server name of the sample site.
const demoHost = "demo.local"

// demoSite is the sample configuration: the built-in upstream behind a
// virtual host served by the agents labelled env=demo.
func demoSite(port int, upstream string) string {
	return fmt.Sprintf(`apiVersion: nxmesh/v1
kind: Upstream
metadata: {name: demo-app}
spec:
  servers: [{address: %q}]
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata: {name: demo}
spec:
  serverNames: [%s, localhost]
  listen: [{port: %d}]
  selector: {matchLabels: {env: demo}}
  headers:
    response:
      add: {X-Served-By: nxmesh-demo}
  locations:
    - path: /
      upstream: demo-app
`, upstream, demoHost, port)
}

func (c *demoCmd) Run(ctx context.Context, g *Globals) error {
	dir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return err
	}
	if c.Fresh {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := checkFree(map[string]string{"--api-addr": c.APIAddr, "--agent-addr": c.AgentAddr, "--relay-addr": c.RelayAddr,
		"--port": net.JoinHostPort("0.0.0.0", strconv.Itoa(c.Port)), "--status-port": net.JoinHostPort("127.0.0.1", strconv.Itoa(c.StatusPort)),
		"--upstream-addr": c.UpstreamAddr}); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	quiet := &Globals{LogLevel: slog.LevelInfo, LogFormat: "text", stdin: g.stdin, stdout: io.Discard, stderr: logFile}
	out := g.stdout
	fmt.Fprintf(out, "NxMesh demo: data in %s, logs in %s\n", dir, logFile.Name())

	hubDir := filepath.Join(dir, "hub")
	srv, err := hub.New(ctx, hub.Config{DataDir: hubDir, APIAddr: c.APIAddr, AgentAddr: c.AgentAddr, Logger: quiet.Logger()})
	if err != nil {
		return fmt.Errorf("start the hub: %w", err)
	}
	defer srv.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	eg, ctx := errgroup.WithContext(ctx)
	eg.Go(func() error { return srv.Run(ctx) })
	eg.Go(func() error { return serveUpstream(ctx, c.UpstreamAddr) })
	err = c.start(ctx, eg, srv, dir, quiet, out)
	if err != nil {
		fmt.Fprintf(out, "demo failed: %v (details in %s)\n", err, logFile.Name())
		cancel()
		return errors.Join(err, ignoreCanceled(eg.Wait()))
	}
	err = ignoreCanceled(eg.Wait())
	fmt.Fprintf(out, "demo stopped; its state stays in %s (run again to resume, or add --fresh)\n", dir)
	return err
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// start enrolls (first run) and starts the relay and the agent, applies
// the sample site (first run), waits until nginx serves it and prints
// what to do next. It returns at once when ctx ends.
func (c *demoCmd) start(ctx context.Context, eg *errgroup.Group, srv *hub.Server, dir string, quiet *Globals, out io.Writer) error {
	fmt.Fprintf(out, "  hub       %s (relays and agents connect to %s)\n", srv.APIURL(), c.AgentAddr)
	hubDir := filepath.Join(dir, "hub")
	pwFile := filepath.Join(hubDir, "initial-admin-password")
	pw, err := os.ReadFile(pwFile)
	if err != nil {
		return fmt.Errorf("the demo logs in with %s: %w (start over with --fresh)", pwFile, err)
	}
	password := strings.TrimSpace(string(pw))
	api, err := newAPIClientFor(srv.APIURL(), srv.RootPEM(), "")
	if err != nil {
		return err
	}
	var login struct{ Token string }
	if err := api.do(ctx, "POST", "/api/v1/login", map[string]string{"user": "admin", "password": password}, &login); err != nil {
		return fmt.Errorf("log in as admin with %s: %w (start over with --fresh)", pwFile, err)
	}
	api.token = login.Token

	relayDir, agentDir := filepath.Join(dir, "relay"), filepath.Join(dir, "agent")
	if err := c.enrollOnce(ctx, api, srv, relayDir, pki.RoleRelay, nil, quiet); err != nil {
		return err
	}
	labels := map[string]string{"env": "demo", fleet.LabelStatusPort: strconv.Itoa(c.StatusPort)}
	if err := c.enrollOnce(ctx, api, srv, agentDir, pki.RoleAgent, labels, quiet); err != nil {
		return err
	}
	relayURL := "wss://" + c.RelayAddr + "/v1/agent"
	eg.Go(func() error {
		r := &relayRunCmd{Hubs: []string{"wss://" + c.AgentAddr + "/v1/relay"}, Listen: c.RelayAddr, StateDir: relayDir}
		return r.Run(ctx, quiet)
	})
	fmt.Fprintf(out, "  relay     %s\n", relayURL)
	eg.Go(func() error {
		a := &agentRunCmd{StateDir: agentDir, Relays: []string{relayURL}, StatusListen: "127.0.0.1:" + strconv.Itoa(c.StatusPort)}
		return a.Run(ctx, quiet)
	})
	fmt.Fprintf(out, "  agent     nginx serving port %d, state in %s\n", c.Port, agentDir)
	fmt.Fprintf(out, "  upstream  http://%s (built in)\n", c.UpstreamAddr)

	var ws struct{ Revision int64 }
	if err := api.do(ctx, "GET", "/api/v1/workspaces/default", nil, &ws); err != nil {
		return err
	}
	if ws.Revision == 0 {
		var res struct{ Revision int64 }
		if err := api.do(ctx, "POST", "/api/v1/workspaces/default/apply?message="+url.QueryEscape("demo: sample site"),
			[]byte(demoSite(c.Port, c.UpstreamAddr)), &res); err != nil {
			return fmt.Errorf("apply the sample site: %w", err)
		}
		ws.Revision = res.Revision
		fmt.Fprintf(out, "applied the sample site as revision %d\n", ws.Revision)
	} else {
		fmt.Fprintf(out, "resuming at revision %d\n", ws.Revision)
	}
	fmt.Fprint(out, "waiting for the agent to apply it... ")
	start := time.Now()
	if err := c.waitServing(ctx, api, ws.Revision); err != nil {
		fmt.Fprintln(out)
		return err
	}
	fmt.Fprintf(out, "served after %.1fs\n\n", time.Since(start).Seconds())
	fmt.Fprintf(out, "API:            %s\n", srv.APIURL())
	fmt.Fprintf(out, "Admin password: %s (also in %s)\n", password, pwFile)
	fmt.Fprintf(out, "Use the CLI:\n  export NXMESH_HUB=%s NXMESH_CA_FILE=%s\n  nxmesh login --user admin --password-stdin < %s\n",
		srv.APIURL(), filepath.Join(hubDir, "ca", "root.pem"), pwFile)
	fmt.Fprintf(out, "Try the site (the README has a five-minute tour):\n")
	fmt.Fprintf(out, "curl -s -H 'Host: %s' http://127.0.0.1:%d/\n", demoHost, c.Port)
	fmt.Fprintf(out, "Press Ctrl-C to stop.\n")
	return nil
}

// enrollOnce enrolls a relay or agent into stateDir unless it holds a
// certificate already (a resumed demo).
func (c *demoCmd) enrollOnce(ctx context.Context, api *apiClient, srv *hub.Server, stateDir string, role pki.Role, labels map[string]string, quiet *Globals) error {
	if _, err := os.Stat(pki.Files{Dir: stateDir, Role: role}.CertPath()); err == nil {
		return nil
	}
	var tok struct{ Token string }
	if err := api.do(ctx, "POST", "/api/v1/workspaces/default/enrollment-tokens", map[string]any{"role": role, "labels": labels}, &tok); err != nil {
		return fmt.Errorf("create the %s enrollment token: %w", role, err)
	}
	e := &enrollFlags{Hub: srv.APIURL(), Token: tok.Token, StateDir: stateDir}
	if err := e.enroll(ctx, quiet, role); err != nil {
		return fmt.Errorf("enroll the %s: %w", role, err)
	}
	return nil
}

// waitServing waits until the revision is applied and nginx answers for
// the sample site through the upstream.
func (c *demoCmd) waitServing(ctx context.Context, api *apiClient, rev int64) error {
	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for time.Now().Before(deadline) {
		var st fleet.Convergence
		err := api.do(ctx, "GET", fmt.Sprintf("/api/v1/workspaces/default/revisions/%d/status", rev), nil, &st)
		if err == nil && len(st.Failing) > 0 {
			f := st.Failing[0]
			return fmt.Errorf("agent %s did not apply revision %d: %s: %s\n%s", f.Agent, rev, f.State, f.Reason, f.Output)
		}
		if err == nil && st.Counts.Applied > 0 {
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/", c.Port), nil)
			req.Host = demoHost
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return nil
				}
				err = fmt.Errorf("nginx answered %s", resp.Status)
			}
			last = err
		} else if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the sample site is not served after 60 s: %v", last)
}

// checkFree fails, naming the flag, when an address is taken.
func checkFree(addrs map[string]string) error {
	for flag, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s %s is not free (%v): stop what uses it, or pick another with %s", flag, addr, err, flag)
		}
		ln.Close()
	}
	return nil
}

// serveUpstream is the demo's built-in upstream: it says hello and echoes
// what nginx sent it, until ctx ends.
func serveUpstream(ctx context.Context, addr string) error {
	srv := &http.Server{
		Addr:              addr,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "Hello from the NxMesh demo upstream.\nnginx forwarded: %s %s (Host: %s)\n", r.Method, r.URL.Path, r.Host)
		}),
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("demo upstream: %w", err)
	}
	return nil
}
