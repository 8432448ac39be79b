package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one nxmesh process the bench runs as a child: the hub, a relay
// or an agent process. It can be killed and started again with the same
// arguments.
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string // stdout and stderr, appended across restarts
	// debugAddr is the daemon's --debug-addr (pprof) when the run
	// profiles, else empty.
	debugAddr string
	// pipes, when set, connects the process's standard input and output
	// to stdin and stdout, which start sets (an agent process speaks with
	// the bench on them); only stderr goes to logPath.
	pipes bool
	// env is added to the child's environment (childEnv).
	env    []string
	stdin  io.WriteCloser
	stdout io.ReadCloser

	mu   sync.Mutex // guards cmd and done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	werr error         // cmd.Wait's error, once done is closed
}

// start runs the process. Its output goes to logPath. The child gets its
// own process group, so a Ctrl-C at the terminal reaches only the bench,
// which stops its children in order; Pdeathsig kills the child should the
// bench itself die without cleaning up.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("%s is already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	fmt.Fprintf(logf, "--- %s: %s %s\n", time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(childEnv(), p.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The child's ends of the pipes, closed here once it has them. Plain
	// os.Pipes rather than cmd.StdoutPipe, which Wait would close before
	// the bench has read the last of it.
	var childEnds []*os.File
	if p.pipes {
		inR, inW, err := os.Pipe()
		if err != nil {
			logf.Close()
			return fmt.Errorf("start %s: %w", p.name, err)
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			logf.Close()
			inR.Close()
			inW.Close()
			return fmt.Errorf("start %s: %w", p.name, err)
		}
		cmd.Stdin, cmd.Stdout = inR, outW
		childEnds = []*os.File{inR, outW}
		p.stdin, p.stdout = inW, outR
	}
	err = cmd.Start()
	for _, f := range childEnds {
		f.Close()
	}
	if err != nil {
		logf.Close()
		if p.pipes {
			p.stdin.Close()
			p.stdout.Close()
		}
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.werr = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// childEnv is the bench's environment without NXMESH_* variables: every
// setting of a child is on its command line, so that a variable meant for
// the operator's CLI (NXMESH_DATABASE_URL, ...) does not change the run.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NXMESH_") {
			env = append(env, kv)
		}
	}
	return env
}

// pid is the running process's id, or 0.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
	}
	return p.cmd.Process.Pid
}

// exited is closed when the current process exits; nil when none runs.
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// exitErr describes how the process ended, with the end of its log.
func (p *proc) exitErr() error {
	p.mu.Lock()
	err := p.werr
	p.mu.Unlock()
	return fmt.Errorf("%s exited (%v); the end of %s:\n%s", p.name, err, p.logPath, tail(p.logPath, 15))
}

// stop ends the process: sig, then SIGKILL if it is still there after
// grace. It returns once the process has exited.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
	p.mu.Lock()
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
}

// kill ends the process at once, as a crash would.
func (p *proc) kill() { p.stop(syscall.SIGKILL, 10*time.Second) }

// terminate ends the process the way an operator would.
func (p *proc) terminate() { p.stop(syscall.SIGTERM, 10*time.Second) }

// tail is the last n lines of the file at path.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// threadsCPU is the CPU time of pid's threads now, from the scheduler's
// own count in nanoseconds (/proc/PID/task/TID/schedstat) rather than the
// 10 ms steps of /proc/PID/stat: what a push of a few hundred agents costs
// is a few tens of milliseconds. A thread that has exited is no longer
// counted; Go's threads live as long as their process.
func threadsCPU(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread ended since the directory was read
		}
		if err != nil {
			return 0, err
		}
		// "time on the CPU (ns)  time waiting to run (ns)  timeslices"
		f := strings.Fields(string(data))
		if len(f) == 0 {
			return 0, fmt.Errorf("%s/%s/schedstat: empty", dir, t.Name())
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s/%s/schedstat: %w", dir, t.Name(), err)
		}
		sum += time.Duration(ns)
	}
	return sum, nil
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
// 100 on every Linux architecture Go supports (the kernel scales its own
// HZ to it for user space).
const clockTicks = 100

// procSample is what /proc says about a process at one moment.
type procSample struct {
	RSS int64         // resident set size in bytes (VmRSS)
	CPU time.Duration // user plus system time since the process started
}

// readProc samples the process pid.
func readProc(pid int) (procSample, error) {
	var s procSample
	if pid <= 0 {
		return s, errors.New("no process")
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return s, err
	}
	// The command name, field 2, is in parentheses and may hold spaces:
	// count fields after the last ')'. utime and stime are fields 14 and
	// 15, so 12th and 13th after it (state is field 3).
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 {
		return s, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return s, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	s.CPU = time.Duration(utime+stime) * time.Second / clockTicks

	st, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return s, err
	}
	defer st.Close()
	sc := bufio.NewScanner(st)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != "VmRSS" {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) != 2 || fields[1] != "kB" {
			return s, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, v)
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return s, fmt.Errorf("/proc/%d/status: VmRSS: %w", pid, err)
		}
		s.RSS = kb << 10
		return s, nil
	}
	return s, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// errTimeout is wrapped by the error of a wait that ran out of time.
var errTimeout = errors.New("timed out")

// waitFor polls cond every interval until it is true, ctx ends or timeout
// passes; what names the wait in the error.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s: not within %s: %w", what, timeout, errTimeout)
			}
			return ctx.Err()
		case <-t.C:
		}
	}
}
