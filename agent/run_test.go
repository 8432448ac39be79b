package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/nginx"
)

// TestStopStaleNginxAfterAgentKill: when the agent is SIGKILLed, Pdeathsig
// kills the nginx master but its workers keep the listening sockets. The
// next agent finds the group through <state>/nginx.pid and stops it, so the
// ports are free for its own child.
func TestStopStaleNginxAfterAgentKill(t *testing.T) {
	e := newEnv(t, nil)
	mustApply(t, e.applier, bundle(t, e.ports, 1, 1))
	serves(t, e.ports.vhost, "gen=1")
	master, err := e.managed.PID()
	if err != nil {
		t.Fatal(err)
	}
	workers := nginx.Workers(master)
	if len(workers) == 0 {
		t.Fatal("no nginx workers found")
	}
	// What Pdeathsig does when the agent dies: the master alone is killed.
	if err := syscall.Kill(master, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the kernel reap the master; the workers live on
	if err := syscall.Kill(workers[0], 0); err != nil {
		t.Fatalf("worker died with the master (%v): the scenario did not happen", err)
	}
	if err := agent.StopStaleNginx(context.Background(), e.dir, 2*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	for _, w := range workers {
		if alive(w) {
			t.Errorf("worker %d still alive", w)
		}
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", e.ports.vhost))
	if err != nil {
		t.Fatalf("vhost port still taken: %v", err)
	}
	ln.Close()
	// A second call finds nothing and is not an error.
	if err := agent.StopStaleNginx(context.Background(), e.dir, time.Second, nil); err != nil {
		t.Fatal(err)
	}
}

// TestStopStaleNginxIgnoresNonNginx: a pid file naming a process that is not
// nginx (a reused pid) never gets a signal.
func TestStopStaleNginxIgnoresNonNginx(t *testing.T) {
	dir := t.TempDir()
	self := syscall.Getpgrp()
	if err := os.WriteFile(dir+"/nginx.pid", fmt.Appendf(nil, "%d\n", self), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := agent.StopStaleNginx(context.Background(), dir, time.Second, nil); err != nil {
		t.Fatal(err)
	}
	// Still alive to tell.
}

// alive reports whether pid runs and is not a zombie (orphaned workers are
// reparented to pid 1, which may reap them late).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || !bytes.HasPrefix(bytes.TrimSpace(stat[i+1:]), []byte("Z"))
}
