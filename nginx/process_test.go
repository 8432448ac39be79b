package nginx_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/nginx"
)

// childConf writes a main config answering gen on the status port.
func childConf(t *testing.T, dir string, port int, gen string) string {
	t.Helper()
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;\n"
	}
	conf := filepath.Join(dir, "nginx.conf")
	data := fmt.Sprintf(`%sdaemon off;
master_process on;
worker_processes 1;
pid nginx.pid;
error_log logs/error.log notice;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    server {
        listen 127.0.0.1:%d;
        location = /nxmesh/generation { return 200 "%s"; }
        location = /nxmesh/status { stub_status; }
    }
}
`, user, port, gen)
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(conf, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

// waitGeneration polls until the status server answers want.
func waitGeneration(t *testing.T, url, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := nginx.Generation(context.Background(), url)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %q (%v), want %q", got, err, want)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, bounded by the deadline
	}
}

func TestChildStartReloadStop(t *testing.T) {
	dir := t.TempDir()
	port := testenv.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	conf := childConf(t, dir, port, "one")
	c := nginx.NewChild(testenv.NginxBinary(t), dir, conf)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	if _, err := c.PID(); !errors.Is(err, nginx.ErrNotRunning) {
		t.Fatalf("PID before start: %v, want ErrNotRunning", err)
	}
	// The first Reload starts nginx.
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitGeneration(t, url, "one")
	pid, err := c.PID()
	if err != nil {
		t.Fatal(err)
	}
	if active, err := nginx.Status(context.Background(), url); err != nil || active < 1 {
		t.Errorf("status: %d active, %v", active, err)
	}
	workers := nginx.Workers(pid)
	if len(workers) != 1 {
		t.Errorf("workers %v, want one", workers)
	}

	childConf(t, dir, port, "two")
	if err := c.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitGeneration(t, url, "two")
	if again, _ := c.PID(); again != pid {
		t.Errorf("reload changed the master pid %d -> %d", pid, again)
	}

	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PID(); !errors.Is(err, nginx.ErrNotRunning) {
		t.Errorf("PID after stop: %v", err)
	}
	for _, w := range append(workers, pid) {
		if _, err := os.Stat("/proc/" + strconv.Itoa(w)); err == nil {
			t.Errorf("process %d survived Stop", w)
		}
	}
}

func TestPIDFile(t *testing.T) {
	dir := t.TempDir()
	port := testenv.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	conf := childConf(t, dir, port, "one")
	// Started by the test, not by a Child: the PIDFile only finds it.
	owner := nginx.NewChild(testenv.NginxBinary(t), dir, conf)
	if err := owner.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Stop(context.Background()) })
	waitGeneration(t, url, "one")

	p := &nginx.PIDFile{Path: filepath.Join(dir, "nginx.pid")}
	want, _ := owner.PID()
	if pid, err := p.PID(); err != nil || pid != want {
		t.Fatalf("pid %d (%v), want %d", pid, err, want)
	}
	childConf(t, dir, port, "two")
	if err := p.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitGeneration(t, url, "two")

	tests := []struct {
		name, content string
	}{
		{"missing", ""},
		{"garbage", "not a pid\n"},
		{"not nginx", strconv.Itoa(os.Getpid()) + "\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "nginx.pid")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := (&nginx.PIDFile{Path: path}).Reload(context.Background()); err == nil {
				t.Error("reload succeeded")
			}
		})
	}
}
