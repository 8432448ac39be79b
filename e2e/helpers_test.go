package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/hub"
	"github.com/nxmesh/nxmesh/hub/fleet"
	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/schema"
	"github.com/nxmesh/nxmesh/wire"
)

// nxmeshBin is the nxmesh binary built for this test run: relays run as
// separate processes, and enrollment goes through the real CLI.
var nxmeshBin string

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "nxmesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	nxmeshBin = filepath.Join(dir, "nxmesh")
	if out, err := exec.Command("go", "build", "-o", nxmeshBin, "../cmd/nxmesh").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build nxmesh: %v\n%s", err, out)
		return 1
	}
	return testenv.Main(m)
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t testing.TB) string {
	return "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
}

// hubEnv is a hub running in this process on fixed loopback ports, so that
// it can be stopped and started again at the same addresses.
type hubEnv struct {
	t                  testing.TB
	dir                string
	apiAddr, agentAddr string
	dbURL              string
	mutate             func(*hub.Config)

	srv    *hub.Server
	cancel context.CancelFunc
	done   chan error

	http  *http.Client
	token string
}

func startHub(t testing.TB, dbURL string) *hubEnv {
	t.Helper()
	return startHubWith(t, dbURL, nil)
}

// startHubWith starts a hub whose configuration mutate adjusts (on every
// start).
func startHubWith(t testing.TB, dbURL string, mutate func(*hub.Config)) *hubEnv {
	t.Helper()
	h := &hubEnv{t: t, dir: t.TempDir(), apiAddr: freeAddr(t), agentAddr: freeAddr(t), dbURL: dbURL, mutate: mutate}
	h.start()
	t.Cleanup(h.stop)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(h.srv.RootPEM())
	h.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	pw, err := os.ReadFile(filepath.Join(h.dir, "initial-admin-password"))
	if err != nil {
		t.Fatal(err)
	}
	var login struct{ Token string }
	h.mustDo("POST", "/api/v1/login", map[string]string{"user": "admin", "password": strings.TrimSpace(string(pw))}, &login)
	h.token = login.Token
	return h
}

func (h *hubEnv) start() {
	h.t.Helper()
	cfg := hub.Config{
		DataDir: h.dir, APIAddr: h.apiAddr, AgentAddr: h.agentAddr, DatabaseURL: h.dbURL,
		Logger: testLogger(h.t, "hub"),
	}
	if h.mutate != nil {
		h.mutate(&cfg)
	}
	srv, err := hub.New(context.Background(), cfg)
	if err != nil {
		h.t.Fatalf("start hub: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.srv, h.cancel, h.done = srv, cancel, make(chan error, 1)
	go func() { h.done <- srv.Run(ctx) }()
}

// stop stops the hub; it may be started again.
func (h *hubEnv) stop() {
	if h.srv == nil {
		return
	}
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("hub Run: %v", err)
	}
	h.srv.Close()
	h.srv = nil
}

func (h *hubEnv) agentURL() string { return "wss://" + h.agentAddr + "/v1/agent" }
func (h *hubEnv) relayURL() string { return "wss://" + h.agentAddr + "/v1/relay" }
func (h *hubEnv) apiURL() string   { return "https://" + h.apiAddr }

// do calls the API; body is JSON unless it is []byte (sent as YAML). It
// returns the status and the raw answer, decoded into out when given.
func (h *hubEnv) do(method, path string, body, out any) (int, []byte) {
	h.t.Helper()
	var rd io.Reader
	ct := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd, ct = bytes.NewReader(b), "application/yaml"
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd, ct = bytes.NewReader(data), "application/json"
	}
	req, err := http.NewRequest(method, h.apiURL()+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			h.t.Fatalf("%s %s: decode %s: %v", method, path, data, err)
		}
	}
	return resp.StatusCode, data
}

func (h *hubEnv) mustDo(method, path string, body, out any) {
	h.t.Helper()
	if code, data := h.do(method, path, body, out); code >= 300 {
		h.t.Fatalf("%s %s: %d %s", method, path, code, data)
	}
}

// applyResult is the API's answer to apply.
type applyResult struct {
	Revision int64 `json:"revision"`
	Changed  bool  `json:"changed"`
}

// apply applies YAML documents to the default workspace through the API.
func (h *hubEnv) apply(yaml string) applyResult {
	h.t.Helper()
	var res applyResult
	h.mustDo("POST", "/api/v1/workspaces/default/apply", []byte(yaml), &res)
	return res
}

func (h *hubEnv) convergence(rev int64) fleet.Convergence {
	h.t.Helper()
	var c fleet.Convergence
	h.mustDo("GET", fmt.Sprintf("/api/v1/workspaces/default/revisions/%d/status", rev), nil, &c)
	return c
}

// waitConverged polls the convergence of rev until no agent is pending.
func (h *hubEnv) waitConverged(rev int64, within time.Duration) fleet.Convergence {
	h.t.Helper()
	var c fleet.Convergence
	deadline := time.Now().Add(within)
	for {
		c = h.convergence(rev)
		if c.Done && c.Counts.Offline == 0 {
			return c
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("revision %d did not converge within %v: %+v", rev, within, c)
		}
		time.Sleep(50 * time.Millisecond) // polling an HTTP endpoint
	}
}

// enrollmentToken makes a one-use enrollment token.
func (h *hubEnv) enrollmentToken(role string, labels map[string]string) string {
	h.t.Helper()
	var res struct{ Token string }
	h.mustDo("POST", "/api/v1/workspaces/default/enrollment-tokens", map[string]any{"role": role, "labels": labels}, &res)
	return res.Token
}

// enroll runs `nxmesh agent|relay enroll` into a new state directory.
func (h *hubEnv) enroll(role string, labels map[string]string) string {
	h.t.Helper()
	dir := h.t.TempDir()
	cmd := exec.Command(nxmeshBin, role, "enroll", "--hub", h.apiURL(), "--state-dir", dir)
	cmd.Env = append(os.Environ(), "NXMESH_ENROLL_TOKEN="+h.enrollmentToken(role, labels))
	if out, err := cmd.CombinedOutput(); err != nil {
		h.t.Fatalf("%s enroll: %v\n%s", role, err, out)
	}
	return dir
}

// relayProc is `nxmesh relay run` as a separate process.
type relayProc struct {
	t    testing.TB
	dir  string
	addr string
	hubs []string
	cmd  *exec.Cmd
	out  *syncBuffer
	exit chan error
}

func startRelay(t testing.TB, h *hubEnv, hubs ...string) *relayProc {
	t.Helper()
	if len(hubs) == 0 {
		hubs = []string{h.relayURL()}
	}
	r := &relayProc{t: t, dir: h.enroll("relay", nil), addr: freeAddr(t), hubs: hubs}
	r.start()
	t.Cleanup(r.stop)
	return r
}

func (r *relayProc) url() string { return "wss://" + r.addr + "/v1/agent" }

func (r *relayProc) start() {
	r.t.Helper()
	r.out = &syncBuffer{}
	r.cmd = exec.Command(nxmeshBin, "relay", "run", "--hubs", strings.Join(r.hubs, ","), "--listen", r.addr,
		"--state-dir", r.dir, "--log-level", "debug")
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.out
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.exit = make(chan error, 1)
	go func() { r.exit <- r.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", r.addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-r.exit:
			r.t.Fatalf("relay exited: %v\n%s", err, r.out.String())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("relay does not listen on %s:\n%s", r.addr, r.out.String())
		}
		time.Sleep(20 * time.Millisecond) // waiting for a process to bind
	}
}

// stop ends the relay gracefully (SIGTERM); kill ends it with SIGKILL.
func (r *relayProc) stop() { r.signal(syscall.SIGTERM) }
func (r *relayProc) kill() { r.signal(syscall.SIGKILL) }

func (r *relayProc) signal(sig syscall.Signal) {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(sig)
	select {
	case <-r.exit:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exit
		r.t.Errorf("relay did not stop on %v:\n%s", sig, r.out.String())
	}
	if r.t.Failed() {
		r.t.Logf("relay output:\n%s", r.out.String())
	}
	r.cmd = nil
}

// agentEnv is an enrolled agent; run starts `agent.Run` in this process,
// managing a real nginx.
type agentEnv struct {
	t          testing.TB
	id         string
	dir        string
	statusPort int

	cancel  context.CancelFunc
	done    chan error
	results results
}

func enrollAgent(t testing.TB, h *hubEnv, labels map[string]string) *agentEnv {
	t.Helper()
	a := &agentEnv{t: t, statusPort: testenv.FreePort(t)}
	all := map[string]string{fleet.LabelStatusPort: strconv.Itoa(a.statusPort)}
	for k, v := range labels {
		all[k] = v
	}
	a.dir = h.enroll("agent", all)
	cert, err := pki.Files{Dir: a.dir, Role: pki.RoleAgent}.LoadKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	a.id = id.ID
	t.Cleanup(a.stop)
	return a
}

func (a *agentEnv) run(relays ...string) {
	a.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan error, 1)
	cfg := agent.RunConfig{
		StateDir: a.dir, Relays: relays, NginxBinary: testenv.NginxBinary(a.t).Path,
		StatusListen: "127.0.0.1:" + strconv.Itoa(a.statusPort), Logger: testLogger(a.t, "agent"),
		OnResult: a.results.add,
	}
	go func() { a.done <- agent.Run(ctx, cfg) }()
}

func (a *agentEnv) stop() {
	if a.cancel == nil {
		return
	}
	a.cancel()
	if err := <-a.done; err != nil {
		a.t.Errorf("agent %s: %v", a.id, err)
	}
	a.cancel = nil
}

// upstream is a real HTTP server on loopback the vhosts proxy to.
func upstream(t testing.TB, body string) int {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().(*net.TCPAddr).Port
}

// site is an Upstream and a VirtualHost on port that proxies to the
// upstream and marks its answers with X-Site-Version: version.
func site(port, upPort int, version string) string {
	return fmt.Sprintf(`apiVersion: nxmesh/v1
kind: Upstream
metadata: {name: app}
spec:
  servers: [{address: "127.0.0.1:%d"}]
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata: {name: site}
spec:
  serverNames: [localhost]
  listen: [{port: %d}]
  headers:
    response:
      add: {X-Site-Version: %q}
  locations:
    - path: /
      upstream: app
`, upPort, port, version)
}

// fetch GETs http://127.0.0.1:port/ and returns the body and the
// X-Site-Version header.
func fetch(port int) (body, version string, err error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", fmt.Errorf("status %s: %s", resp.Status, data)
	}
	return string(data), resp.Header.Get("X-Site-Version"), nil
}

// waitServed polls port until it answers with version, and returns when.
func waitServed(t testing.TB, port int, version string, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		_, v, err := fetch(port)
		if err == nil && v == version {
			return time.Now()
		}
		last = err
		if err == nil {
			last = fmt.Errorf("serves version %q", v)
		}
		time.Sleep(20 * time.Millisecond) // polling nginx
	}
	t.Fatalf("port %d does not serve version %q within %v: %v", port, version, within, last)
	return time.Time{}
}

// syncBuffer is a bytes.Buffer safe for a process's output and the test.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testLogger logs to the test output when NXMESH_TEST_LOG is set, and
// discards otherwise.
func testLogger(t testing.TB, component string) *slog.Logger {
	if os.Getenv("NXMESH_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})).With("c", component)
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testenvPort(t testing.TB) int { return testenv.FreePort(t) }

// relayID is the id in the relay's certificate.
func relayID(t testing.TB, r *relayProc) string {
	t.Helper()
	cert, err := pki.Files{Dir: r.dir, Role: pki.RoleRelay}.LoadKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	return id.ID
}

// applyStore commits documents through the store, for setups that are not
// what a test is about.
func (h *hubEnv) applyStore(yaml string) applyResult {
	h.t.Helper()
	docs, err := schema.Decode("test.yaml", []byte(yaml))
	if err != nil {
		h.t.Fatal(err)
	}
	res, err := h.srv.Store().Apply(context.Background(), "default", docs, store.Change{Author: "e2e"})
	if err != nil {
		h.t.Fatal(err)
	}
	return applyResult{Revision: res.Revision, Changed: res.Changed}
}

// results records an agent's apply outcomes.
type results struct {
	mu   sync.Mutex // guards list
	list []agent.Result
}

func (r *results) add(res agent.Result) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, res)
}

// count returns how many applies the agent reported so far.
func (r *results) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.list)
}

func (r *results) since(mark int) []agent.Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]agent.Result(nil), r.list[mark:]...)
}

// rawDial opens a wire session by hand with a state directory's
// certificate, for tests of what relays and hubs refuse.
func rawDial(t testing.TB, dir string, role pki.Role, url string) (*wire.Conn, error) {
	t.Helper()
	ws, err := rawWS(t, dir, role, url)
	if err != nil {
		return nil, err
	}
	conn := wire.NewConn(ws, wire.MaxRelayMessage, 30*time.Second)
	t.Cleanup(conn.CloseNow)
	return conn, nil
}

// rawWS is rawDial without the wire framing, to send broken frames.
func rawWS(t testing.TB, dir string, role pki.Role, url string) (*websocket.Conn, error) {
	t.Helper()
	files := pki.Files{Dir: dir, Role: role}
	cert, err := files.LoadKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	root, err := files.LoadRoot("")
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(cert)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	tlsCfg, err := pki.ClientTLSConfig(src, pki.Peer{TrustDomain: id.TrustDomain, Roots: pool, Roles: []pki.Role{pki.RoleRelay, pki.RoleHub}})
	if err != nil {
		t.Fatal(err)
	}
	ws, _, err := wire.NewDialer(tlsCfg).Dial(url, nil)
	return ws, err
}

// rawHello dials and says hello; it returns the session after Welcome.
func rawHello(t testing.TB, dir, url string) *wire.Conn {
	t.Helper()
	conn, err := rawDial(t, dir, pki.RoleAgent, url)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	if err := conn.Write(&wire.Hello{Protocol: wire.Protocol}, nil); err != nil {
		t.Fatal(err)
	}
	m, _, err := conn.Read(context.Background())
	if err != nil {
		t.Fatalf("read welcome: %v", err)
	}
	if _, ok := m.(*wire.Welcome); !ok {
		t.Fatalf("first message %s, want welcome", m.Type())
	}
	return conn
}

// closeCode reads from conn until it fails and returns the close code the
// peer sent, 0 when the connection ended without one.
func closeCode(conn *wire.Conn, within time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		_, _, err := conn.Read(ctx)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		return 0
	}
}

// offsetClock is a clock a test moves forward; safe for concurrent use.
type offsetClock struct {
	mu  sync.Mutex // guards off
	off time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *offsetClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

// startPeerHub starts a second hub of first's installation: the same
// database and secret key, its own ports and data directory. It uses
// first's session token, which the shared database knows.
func startPeerHub(t testing.TB, first *hubEnv) *hubEnv {
	t.Helper()
	key := filepath.Join(first.dir, "secret.key")
	h := &hubEnv{t: t, dir: t.TempDir(), apiAddr: freeAddr(t), agentAddr: freeAddr(t), dbURL: first.dbURL,
		mutate: func(c *hub.Config) { c.SecretKeyFile = key }}
	h.start()
	t.Cleanup(h.stop)
	h.http, h.token = first.http, first.token
	return h
}
