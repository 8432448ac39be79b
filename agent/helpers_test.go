package agent_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/nginx"
)

// ports are the loopback ports of one test nginx.
type ports struct {
	status, vhost int
}

func newPorts(t testing.TB) ports {
	return ports{status: testenv.FreePort(t), vhost: testenv.FreePort(t)}
}

func (p ports) statusURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.status) }

// mainConf follows the managed bundle layout of nginx.Compile: pid, logs and
// temp paths resolve against the -p prefix (the state dir), includes against
// the directory of the main config.
func mainConf() string {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n" // workers as nobody could not use the temp prefix
	}
	return user + `daemon off;
master_process on;
worker_processes 1;
pid nginx.pid;
error_log logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log logs/access.log;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server_names_hash_max_size 16384;
    server_names_hash_bucket_size 64;
    include nxmesh/status.conf;
    include vhosts/*.conf;
}
`
}

// bundle builds a managed-layout bundle by hand: n vhosts on p.vhost whose
// bodies say "gen=<gen> vhost=<i>", v0 being the default server, plus extra
// files.
func bundle(t testing.TB, p ports, gen, n int, extra ...nginx.File) *nginx.Bundle {
	t.Helper()
	files := []nginx.File{
		{Path: "nginx.conf", Data: []byte(mainConf())},
		{Path: "nxmesh/status.conf", Data: fmt.Appendf(nil, `server {
    listen 127.0.0.1:%d;
    server_name nxmesh-status;
    access_log off;
    location = /nxmesh/status { stub_status; }
    include nxmesh/generation.conf;
}
`, p.status)},
	}
	for i := range n {
		def := ""
		if i == 0 {
			def = " default_server"
		}
		files = append(files, nginx.File{Path: fmt.Sprintf("vhosts/v%04d.conf", i), Data: fmt.Appendf(nil,
			"server {\n    listen 127.0.0.1:%d%s;\n    server_name v%d.test;\n    location / { return 200 \"gen=%d vhost=%d\\n\"; }\n}\n",
			p.vhost, def, i, gen, i)})
	}
	files = append(files, extra...)
	b, err := nginx.Seal(files)
	if err != nil {
		t.Fatalf("seal bundle: %v", err)
	}
	return b
}

// env is one agent with a managed nginx in a temp state dir.
type env struct {
	ports   ports
	dir     string
	managed *nginx.Child
	applier *agent.Applier
}

func newEnv(t testing.TB, mutate func(*agent.Config)) *env {
	t.Helper()
	e := &env{ports: newPorts(t), dir: t.TempDir()}
	bin := testenv.NginxBinary(t)
	e.managed = nginx.NewChild(bin, e.dir, filepath.Join(e.dir, "current", "nginx.conf"))
	t.Cleanup(func() { _ = e.managed.Stop(context.Background()) })
	cfg := agent.Config{
		StateDir:  e.dir,
		Binary:    bin,
		Reloader:  e.managed,
		StatusURL: e.ports.statusURL(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Recover(context.Background()); err != nil {
		t.Fatalf("recover: %v", err)
	}
	e.applier = a
	return e
}

func mustApply(t testing.TB, a *agent.Applier, b *nginx.Bundle) agent.Result {
	t.Helper()
	res := a.Apply(context.Background(), b)
	if res.State != agent.Applied {
		t.Fatalf("apply %s: %s: %s\n%s", b.Hash[:12], res.State, res.Reason, res.NginxOutput)
	}
	return res
}

// get asks the vhost host on port and returns the body.
func get(client *http.Client, port int, host string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", port), nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return string(body), nil
}

var fresh = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}

// serves polls until v0 answers want (bounded), and fails the test if not.
func serves(t testing.TB, port int, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var last string
	var err error
	for time.Now().Before(deadline) {
		last, err = get(fresh, port, "v0.test")
		if err == nil && strings.HasPrefix(last, want) {
			return
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
	t.Fatalf("v0 answers %q (err %v), want prefix %q", last, err, want)
}

// clientLoop sends requests to v0 continuously, the way a real client with
// keep-alive connections would, and counts failures.
type clientLoop struct {
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex // guards the counters
	ok, fail int
	errs     []string
	stopFn   func()
}

func startClients(t testing.TB, port int) *clientLoop {
	t.Helper()
	c := &clientLoop{stop: make(chan struct{})}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer client.CloseIdleConnections()
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			body, err := get(client, port, "v0.test")
			if err == nil && !strings.HasPrefix(body, "gen=") {
				err = fmt.Errorf("unexpected body %q", body)
			}
			c.mu.Lock()
			if err != nil {
				c.fail++
				if len(c.errs) < 5 {
					c.errs = append(c.errs, err.Error())
				}
			} else {
				c.ok++
			}
			c.mu.Unlock()
		}
	}()
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(c.stop) }); c.wg.Wait() })
	c.stopFn = func() { once.Do(func() { close(c.stop) }); c.wg.Wait() }
	return c
}

// finish stops the loop and fails the test on any failed request.
func (c *clientLoop) finish(t testing.TB) {
	t.Helper()
	c.stopFn()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ok == 0 {
		t.Errorf("client loop sent no successful request")
	}
	if c.fail != 0 {
		t.Errorf("client loop: %d of %d requests failed: %v", c.fail, c.ok+c.fail, c.errs)
	}
	t.Logf("client loop: %d requests, %d failed", c.ok+c.fail, c.fail)
}
