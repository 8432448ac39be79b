package testenv

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/nginx"
)

// StartBundle starts nginx on a compiled managed-mode bundle, laid out as
// the agent lays it out: the bundle in PREFIX/current, logs/ and tmp/ in
// PREFIX, nginx -p PREFIX -c PREFIX/current/nginx.conf. It waits until
// nginx accepts connections on waitPort (0: do not wait) and stops nginx
// when the test ends. When the test runs as root the bundle should have
// been compiled with Options.User "root", or workers cannot read the temp
// directories.
func StartBundle(t testing.TB, b *nginx.Bundle, waitPort int) *Nginx {
	t.Helper()
	bin := NginxBinary(t)
	prefix := t.TempDir()
	tree := filepath.Join(prefix, "current")
	if err := b.Write(tree); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(tree, nginx.MainFile)
	if err := bin.Test(context.Background(), prefix, conf); err != nil {
		t.Fatalf("test bundle %s: %v", b.Hash, err)
	}
	n := &Nginx{Prefix: prefix, Conf: conf, stderr: new(bytes.Buffer)}
	n.cmd = bin.Command(context.Background(), prefix, conf)
	n.cmd.Stderr = n.stderr
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(prefix, "logs", "error.log")); err == nil {
				t.Logf("nginx error.log:\n%s", log)
			}
		}
	})
	if waitPort != 0 {
		if err := waitListening(waitPort, exited, 10*time.Second); err != nil {
			log, _ := os.ReadFile(filepath.Join(prefix, "logs", "error.log"))
			t.Fatalf("nginx did not start: %v\n%s%s", err, n.stderr.String(), log)
		}
	}
	return n
}
