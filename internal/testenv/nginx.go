package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/internal/ports"
	"github.com/nxmesh/nxmesh/nginx"
)

// NginxBinary returns the nginx binary, or fails the test with the fix.
// Tests never skip for a missing nginx: make test installs it.
func NginxBinary(t testing.TB) *nginx.Binary {
	t.Helper()
	b, err := nginx.FindBinary()
	if err != nil {
		t.Fatalf("%v (run `make test-deps` as root to install it)", err)
	}
	return b
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, for
// a server the test starts next (nginx, a daemon on the command line);
// see ports.Free.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := ports.Free()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Nginx is an nginx master started by StartNginx.
type Nginx struct {
	Prefix string
	Conf   string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

// MainConfig returns a main nginx.conf for tests: foreground master, one
// worker, every path inside the prefix, and httpBlock inside http {}.
func MainConfig(httpBlock string) string {
	user := ""
	if os.Geteuid() == 0 {
		// Workers would drop to "nobody" and lose access to the temp prefix.
		user = "user root;\n"
	}
	return user + `daemon off;
master_process on;
worker_processes 1;
pid nginx.pid;
error_log stderr notice;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
` + httpBlock + `
}
`
}

// StartNginx starts nginx in a temp prefix with MainConfig(httpBlock) and
// waits until it accepts connections on waitPort (0: do not wait). It is
// stopped when the test ends.
func StartNginx(t testing.TB, httpBlock string, waitPort int) *Nginx {
	t.Helper()
	bin := NginxBinary(t)
	prefix := t.TempDir()
	if err := os.MkdirAll(filepath.Join(prefix, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, []byte(MainConfig(httpBlock)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := bin.Test(context.Background(), prefix, conf); err != nil {
		t.Fatalf("test nginx config: %v", err)
	}
	return start(t, bin, prefix, conf, "", waitPort)
}

// start runs a tested config as a foreground master in its own process
// group (killed with the test binary), waits for waitPort (0: do not wait),
// and stops it when the test ends. errorLog, when set, is shown if the test
// fails: nginx writes there once its config is loaded.
func start(t testing.TB, bin *nginx.Binary, prefix, conf, errorLog string, waitPort int) *Nginx {
	t.Helper()
	n := &Nginx{Prefix: prefix, Conf: conf, stderr: new(bytes.Buffer)}
	n.cmd = bin.Command(context.Background(), prefix, conf)
	n.cmd.Stderr = n.stderr
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(exited) }()
	readLog := func() string {
		if errorLog == "" {
			return ""
		}
		data, _ := os.ReadFile(errorLog)
		return string(data)
	}
	t.Cleanup(func() {
		// SIGQUIT is a graceful shutdown; the process group catches workers.
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() && errorLog != "" {
			t.Logf("nginx error log:\n%s", readLog())
		}
	})
	if waitPort != 0 {
		if err := waitListening(waitPort, exited, 10*time.Second); err != nil {
			t.Fatalf("nginx did not start: %v\n%s%s", err, n.stderr.String(), readLog())
		}
	}
	return n
}

// Stderr returns what nginx has logged so far.
func (n *Nginx) Stderr() string { return n.stderr.String() }

// waitListening polls until something accepts on 127.0.0.1:port, the process
// exits, or the deadline passes.
func waitListening(port int, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("nginx exited")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %s: %v", addr, limit, strings.TrimSpace(err.Error()))
		}
	}
}
