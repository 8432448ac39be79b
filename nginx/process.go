package nginx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning means there is no nginx master to signal.
var ErrNotRunning = errors.New("nginx master is not running")

// Child is an nginx master that the agent starts as its own child (for
// bundles of Managed mode), in its own process group, with a fixed argument
// vector: nginx -p prefix -c conf -e stderr. The configuration must say
// "daemon off;" so that the master stays the child we watch.
type Child struct {
	bin    *Binary
	prefix string
	conf   string
	// stopTimeout bounds the graceful shutdown in Stop before SIGKILL.
	stopTimeout time.Duration

	mu sync.Mutex // guards the fields below
	// cmd is the running master, nil before the first start.
	cmd *exec.Cmd
	// exited is closed when cmd has been waited for.
	exited chan struct{}
	// stderr keeps the tail of what the master wrote to stderr.
	stderr *tailBuffer
}

// NewChild returns a Child for conf with the given prefix. It starts
// nothing: the first Reload (or Start) starts nginx.
func NewChild(bin *Binary, prefix, conf string) *Child {
	return &Child{bin: bin, prefix: prefix, conf: conf, stopTimeout: 10 * time.Second, stderr: newTailBuffer(64 << 10)}
}

// Start starts the master if it is not running. It returns once the process
// has been started, not once it accepts connections: callers verify that by
// asking the status server.
func (c *Child) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startLocked()
}

func (c *Child) startLocked() error {
	if c.runningLocked() {
		return nil
	}
	// The child outlives the context of the call that started it: its
	// lifetime is Stop's business, so it gets context.Background.
	cmd := c.bin.Command(context.Background(), c.prefix, c.conf)
	cmd.Stdout = c.stderr
	cmd.Stderr = c.stderr
	// Own process group so Stop reaches the workers too; Pdeathsig so a
	// crashed agent does not leave a master behind holding the ports.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nginx -c %s: %w", c.conf, err)
	}
	exited := make(chan struct{})
	c.cmd, c.exited = cmd, exited
	go func() {
		_ = cmd.Wait() // the exit status adds nothing to Output
		close(exited)
	}()
	return nil
}

func (c *Child) runningLocked() bool {
	if c.cmd == nil {
		return false
	}
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// Reload makes the master re-read its configuration (SIGHUP). When the
// master is not running, Reload starts it: the first apply of a managed
// agent is a start.
func (c *Child) Reload(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.runningLocked() {
		return c.startLocked()
	}
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload nginx pid %d: %w", c.cmd.Process.Pid, err)
	}
	return nil
}

// PID returns the master's pid, or ErrNotRunning.
func (c *Child) PID() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.runningLocked() {
		return 0, ErrNotRunning
	}
	return c.cmd.Process.Pid, nil
}

// Output returns the tail of what the master wrote to stdout and stderr.
func (c *Child) Output() string { return c.stderr.String() }

// Stop shuts nginx down gracefully (SIGQUIT to the process group) and kills
// the group when it has not exited within the stop timeout or when ctx ends.
// It returns once the master has been waited for.
func (c *Child) Stop(ctx context.Context) error {
	c.mu.Lock()
	cmd, exited := c.cmd, c.exited
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGQUIT)
	timer := time.NewTimer(c.stopTimeout)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
	case <-ctx.Done():
	}
	// Workers of an exited master, or a master that ignored SIGQUIT, go now.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
	return nil
}

// PIDFile is an nginx master the agent did not start, found through its pid
// file. The pid file is read again for every signal, because nginx rewrites
// it when it is restarted.
type PIDFile struct {
	// Path is the pid file nginx writes (its "pid" directive).
	Path string
}

// PID reads the pid file and checks that the process exists and, where
// /proc tells, that it is nginx.
func (p *PIDFile) PID() (int, error) {
	data, err := os.ReadFile(p.Path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%w: no pid file %s", ErrNotRunning, p.Path)
	}
	if err != nil {
		return 0, fmt.Errorf("read nginx pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("nginx pid file %s holds %q, not a pid", p.Path, bytes.TrimSpace(data))
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, fmt.Errorf("%w: pid %d from %s: %v", ErrNotRunning, pid, p.Path, err)
	}
	// A stale pid file may name a pid the kernel gave to something else:
	// never send SIGHUP to a process that is not nginx.
	if cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); err == nil {
		if !isNginxCmdline(cmdline) {
			return 0, fmt.Errorf("%w: pid %d from %s is not nginx", ErrNotRunning, pid, p.Path)
		}
	}
	return pid, nil
}

// isNginxCmdline reports whether /proc/<pid>/cmdline is an nginx process's:
// retitled "nginx: master process ...", "nginx: worker process", or run as a
// binary named nginx.
func isNginxCmdline(cmdline []byte) bool {
	if bytes.HasPrefix(cmdline, []byte("nginx: ")) {
		return true
	}
	argv0, _, _ := bytes.Cut(cmdline, []byte{0})
	return filepath.Base(string(argv0)) == "nginx"
}

// Reload sends SIGHUP to the master named by the pid file.
func (p *PIDFile) Reload(ctx context.Context) error {
	pid, err := p.PID()
	if err != nil {
		return fmt.Errorf("reload nginx: %w", err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload nginx pid %d: %w", pid, err)
	}
	return nil
}

// Workers returns the pids of the worker processes of master that still
// accept connections: a worker that began a graceful shutdown (after a
// reload) has closed its listening sockets and is left out. It reads /proc;
// where /proc is missing it returns nil.
func Workers(master int) []int {
	var pids []int
	listening := listeningInodes()
	for _, p := range processes() {
		if p.ppid == master && isWorker(p.pid) && holdsListener(p.pid, listening) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// GroupProcesses returns the live nginx processes (master, workers, cache
// processes) of process group pgid. An agent that was killed leaves its
// nginx workers behind in that group, holding the listening sockets.
func GroupProcesses(pgid int) []int {
	var pids []int
	for _, p := range processes() {
		if p.pgrp != pgid {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/cmdline")
		if err == nil && isNginxCmdline(cmdline) {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

type procInfo struct{ pid, ppid, pgrp int }

// processes lists the live (not zombie) processes from /proc/<pid>/stat;
// where /proc is missing it returns nil.
func processes() []procInfo {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces, so parse after ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		ppid, err1 := strconv.Atoi(f[1])
		pgrp, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, procInfo{pid: pid, ppid: ppid, pgrp: pgrp})
	}
	return out
}

// IsAcceptingWorker reports whether pid is an nginx worker that still holds
// a listening TCP socket. nginx retitles a worker "worker process is
// shutting down" a moment before it closes its listening sockets, and a
// worker descheduled in that moment can still take a new connection, so the
// title alone is not enough: the worker's file descriptors are the truth.
func IsAcceptingWorker(pid int) bool {
	return isWorker(pid) && holdsListener(pid, listeningInodes())
}

func isWorker(pid int) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && bytes.Contains(cmdline, []byte("worker process"))
}

// listeningInodes returns the inodes of the TCP sockets in LISTEN state in
// this network namespace, from /proc/net/tcp and /proc/net/tcp6.
func listeningInodes() map[string]bool {
	inodes := map[string]bool{}
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
			f := strings.Fields(line)
			if len(f) > 9 && f[3] == "0A" {
				inodes[f[9]] = true
			}
		}
	}
	return inodes
}

// holdsListener reports whether pid has a file descriptor open on one of
// the listening sockets.
func holdsListener(pid int, listening map[string]bool) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil || !strings.HasPrefix(target, "socket:[") {
			continue
		}
		if listening[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] {
			return true
		}
	}
	return false
}

// probeClient never reuses connections: a kept-alive connection may belong
// to an old worker that still serves the previous generation.
var probeClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	Timeout:   5 * time.Second,
}

// Generation asks the status server at statusURL (such as
// "http://127.0.0.1:8090") which bundle hash it serves, through
// /nxmesh/generation.
func Generation(ctx context.Context, statusURL string) (string, error) {
	body, err := probe(ctx, strings.TrimSuffix(statusURL, "/")+"/nxmesh/generation")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(body), nil
}

// Status checks that the stub_status page at statusURL/nxmesh/status answers
// and returns its active connection count.
func Status(ctx context.Context, statusURL string) (active int, err error) {
	body, err := probe(ctx, strings.TrimSuffix(statusURL, "/")+"/nxmesh/status")
	if err != nil {
		return 0, err
	}
	// "Active connections: 1 \nserver accepts handled requests\n..."
	first, _, _ := strings.Cut(body, "\n")
	v, ok := strings.CutPrefix(strings.TrimSpace(first), "Active connections:")
	if !ok {
		return 0, fmt.Errorf("nginx status: unexpected answer %q", first)
	}
	return strconv.Atoi(strings.TrimSpace(v))
}

func probe(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("nginx probe %s: %w", url, err)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("nginx probe: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", fmt.Errorf("nginx probe %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("nginx probe %s: status %d", url, resp.StatusCode)
	}
	return string(body), nil
}

// tailBuffer is an io.Writer that keeps the last max bytes written.
type tailBuffer struct {
	mu  sync.Mutex // guards buf
	buf []byte
	max int
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
