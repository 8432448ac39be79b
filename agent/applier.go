// Package agent is the nginx sidecar: it applies configuration bundles to
// the nginx beside it (stage, nginx -t, switch, reload, verify, roll back),
// recovers a consistent tree after a crash, and reports and reverts drift.
// It talks to nginx through package nginx only; it never imports hub,
// hub/store, pki/ca or a database driver, so the agent binary stays small.
package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nxmesh/nxmesh/nginx"
)

// Reloader makes a running nginx load the configuration that current points
// at. *nginx.Child (a child the agent started; its first Reload starts it)
// and *nginx.PIDFile (an existing master) implement it.
type Reloader interface {
	Reload(ctx context.Context) error
}

// master is implemented by reloaders that know the nginx master's pid. The
// applier uses it to wait until the workers of the previous generation stop
// accepting connections, so that "verified" means every new connection
// gets the new generation.
type master interface {
	PID() (int, error)
}

var (
	_ Reloader = (*nginx.Child)(nil)
	_ Reloader = (*nginx.PIDFile)(nil)
	_ master   = (*nginx.Child)(nil)
	_ master   = (*nginx.PIDFile)(nil)
)

// Clock is the time source of the agent; tests replace it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// Step names a point of the apply pipeline. Config.Hook is called at each
// one; state.json records the last one an apply in progress reached.
type Step string

// The steps of an apply, in order.
const (
	// StepStarted: state.json records the apply as pending.
	StepStarted Step = "started"
	// StepStaged: files written and synced under releases/.tmp-*, not renamed.
	StepStaged Step = "staged"
	// StepRenamed: releases/<hash> exists and is complete; current unchanged.
	StepRenamed Step = "renamed"
	// StepTested: nginx -t accepted the staged tree.
	StepTested Step = "tested"
	// StepSwitched: current points at the new release; nginx not reloaded.
	StepSwitched Step = "switched"
	// StepReloaded: nginx was signalled (or started).
	StepReloaded Step = "reloaded"
	// StepVerified: the new generation answers; state.json not yet updated.
	StepVerified Step = "verified"
	// StepCommitted: state.json records the new release; pruning follows.
	StepCommitted Step = "committed"
	// StepRollbackSwitched: during a rollback, current points back at the
	// previous release; nginx not reloaded.
	StepRollbackSwitched Step = "rollback_switched"
)

// State is the outcome of an apply.
type State string

// Outcomes of Apply.
const (
	// Applied: the new generation is live and verified.
	Applied State = "applied"
	// Rejected: nginx -t refused the bundle; it was never live.
	Rejected State = "rejected"
	// RolledBack: the bundle was switched in but failed verification; the
	// previous generation is live again and verified.
	RolledBack State = "rolled_back"
	// Failed: the apply could not complete and the previous generation
	// could not be verified either (or there was none). Needs attention.
	Failed State = "failed"
)

// Durations are the time spent in each step of an apply. Reload is the
// signal only; nginx loads the configuration during Verify.
type Durations struct {
	Stage, Test, Switch, Reload, Verify, Rollback, Total time.Duration
}

// Result is what an apply did.
type Result struct {
	State State
	// Hash is the bundle applied; PreviousHash the one live before.
	Hash, PreviousHash string
	// Reason says why the state is not Applied, with nginx's own words.
	Reason string
	// File and Line are the bundle file and line nginx -t pointed at.
	File string
	Line int
	// NginxOutput is what nginx printed: nginx -t's output for Rejected,
	// the error log lines since the reload for RolledBack.
	NginxOutput string
	// Reloads counts the reloads (or starts) the apply caused, rollback
	// included.
	Reloads   int
	Durations Durations
}

// Err returns nil when the bundle was applied, and an *ApplyError otherwise.
func (r Result) Err() error {
	if r.State == Applied {
		return nil
	}
	return &ApplyError{State: r.State, Hash: r.Hash, Reason: r.Reason, Output: r.NginxOutput}
}

// ApplyError is a bundle that did not become live.
type ApplyError struct {
	State  State
	Hash   string
	Reason string
	Output string
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("apply bundle %s: %s: %s", e.Hash, e.State, e.Reason)
}

// Config configures an Applier.
type Config struct {
	// StateDir holds releases, current, state.json, logs and temp paths.
	// It is nginx's -p prefix.
	StateDir string
	// Binary runs nginx -t on staged trees.
	Binary *nginx.Binary
	// Reloader reloads the nginx that runs <StateDir>/current/nginx.conf.
	Reloader Reloader
	// StatusURL is the base URL of the bundle's status server, such as
	// "http://127.0.0.1:8090"; /nxmesh/generation and /nxmesh/status are
	// asked there.
	StatusURL string
	// VerifyTimeout bounds how long a new generation may take to answer.
	// Default 5 s.
	VerifyTimeout time.Duration
	// KeepReleases is how many recent releases stay on disk. Default 5.
	KeepReleases int
	// ErrorLog is nginx's error log, read for the reason of a failed
	// reload. Default <StateDir>/logs/error.log.
	ErrorLog string
	// DriftPolicy says what CheckDrift does about a hand edit.
	DriftPolicy DriftPolicy
	// OnDrift, when set, is called by RunDrift with every drift found.
	OnDrift func(*Drift)
	// Clock defaults to RealClock.
	Clock Clock
	// Logger defaults to a logger that discards.
	Logger *slog.Logger
	// Hook, when set, is called at every Step. Tests use it to crash the
	// agent at a chosen step; it is nil in production.
	Hook func(Step)
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.StateDir == "" {
		return errors.New("agent config: StateDir is required")
	}
	if !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("agent config: StateDir %q must be absolute", c.StateDir)
	}
	if c.Binary == nil {
		return errors.New("agent config: Binary is required")
	}
	if c.Reloader == nil {
		return errors.New("agent config: Reloader is required")
	}
	if c.StatusURL == "" {
		return errors.New("agent config: StatusURL is required")
	}
	if c.VerifyTimeout <= 0 {
		c.VerifyTimeout = 5 * time.Second
	}
	if c.KeepReleases <= 0 {
		c.KeepReleases = 5
	}
	if c.ErrorLog == "" {
		c.ErrorLog = filepath.Join(c.StateDir, "logs", "error.log")
	}
	switch c.DriftPolicy {
	case "":
		c.DriftPolicy = DriftAlert
	case DriftAlert, DriftRevert:
	default:
		return fmt.Errorf("agent config: unknown drift policy %q (want %q or %q)", c.DriftPolicy, DriftAlert, DriftRevert)
	}
	if c.Clock == nil {
		c.Clock = RealClock
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// Applier applies bundles to one nginx. Its methods are safe for concurrent
// use; they run one at a time.
type Applier struct {
	cfg Config
	log *slog.Logger

	// mu serializes everything that touches the state directory or
	// reloads nginx.
	mu sync.Mutex
}

// New returns an Applier and creates the state directory layout. Call
// Recover before the first Apply.
func New(cfg Config) (*Applier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{releasesDir, "logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("agent state dir: %w", err)
		}
	}
	return &Applier{cfg: cfg, log: cfg.Logger}, nil
}

func (a *Applier) hook(s Step) {
	if a.cfg.Hook != nil {
		a.cfg.Hook(s)
	}
}

// Live returns the hash that current points at, "" when none.
func (a *Applier) Live() (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.liveHash()
}

// Apply makes b the live configuration: stage, nginx -t, switch current,
// reload, verify. A bundle nginx refuses ends Rejected and is never live; a
// bundle that fails verification is switched back and ends RolledBack.
func (a *Applier) Apply(ctx context.Context, b *nginx.Bundle) Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := a.cfg.Clock.Now()
	res := a.apply(ctx, b)
	res.Durations.Total = a.cfg.Clock.Now().Sub(start)
	a.log.Info("apply", "hash", res.Hash, "previous", res.PreviousHash, "state", res.State,
		"reason", res.Reason, "total", res.Durations.Total)
	return res
}

func (a *Applier) since(t time.Time) time.Duration { return a.cfg.Clock.Now().Sub(t) }

func (a *Applier) apply(ctx context.Context, b *nginx.Bundle) Result {
	res := Result{Hash: b.Hash}
	fail := func(state State, format string, args ...any) Result {
		res.State, res.Reason = state, fmt.Sprintf(format, args...)
		return res
	}
	if err := b.Verify(); err != nil {
		return fail(Rejected, "bundle does not verify: %v", err)
	}
	if b.File("nginx.conf") == nil {
		return fail(Rejected, "bundle has no nginx.conf")
	}
	st, err := a.readState()
	if err != nil {
		return fail(Failed, "%v", err)
	}
	old, err := a.liveHash()
	if err != nil {
		return fail(Failed, "%v", err)
	}
	res.PreviousHash = old
	if old == b.Hash {
		// Already current: make sure it is what nginx serves.
		if gen, err := nginx.Generation(ctx, a.cfg.StatusURL); err == nil && gen == b.Hash {
			res.State = Applied
			return res
		}
		t := a.cfg.Clock.Now()
		off := a.snapshot()
		res.Reloads++
		if err := a.cfg.Reloader.Reload(ctx); err != nil {
			return fail(Failed, "%v", err)
		}
		res.Durations.Reload = a.since(t)
		t = a.cfg.Clock.Now()
		if err := a.verify(ctx, b.Hash, off, true); err != nil {
			res.NginxOutput = a.logSince(off.logOff)
			return fail(Failed, "%v", err)
		}
		res.Durations.Verify = a.since(t)
		res.State = Applied
		return res
	}

	st.Pending, st.Step = b.Hash, StepStarted
	if err := a.writeState(st); err != nil {
		return fail(Failed, "%v", err)
	}
	a.hook(StepStarted)
	// clearPending records the end of the apply when it did not commit.
	clearPending := func() {
		st.Pending, st.Step = "", ""
		if err := a.writeState(st); err != nil {
			a.log.Error("apply: clear pending", "hash", b.Hash, "err", err)
		}
	}

	t := a.cfg.Clock.Now()
	created, err := a.stage(b)
	res.Durations.Stage = a.since(t)
	if err != nil {
		clearPending()
		return fail(Failed, "%v", err)
	}

	t = a.cfg.Clock.Now()
	err = a.cfg.Binary.Test(ctx, a.cfg.StateDir, filepath.Join(a.releaseDir(b.Hash), "nginx.conf"))
	res.Durations.Test = a.since(t)
	if err != nil {
		if created {
			_ = os.RemoveAll(a.releaseDir(b.Hash))
		}
		clearPending()
		var te *nginx.TestError
		if errors.As(err, &te) {
			res.NginxOutput = te.Output
			res.File = strings.TrimPrefix(te.File, a.releaseDir(b.Hash)+string(filepath.Separator))
			res.Line = te.Line
			if res.File != "" {
				return fail(Rejected, "nginx -t: %s (%s:%d)", te.Message, res.File, res.Line)
			}
			return fail(Rejected, "nginx -t: %s", te.Message)
		}
		return fail(Failed, "%v", err)
	}
	a.hook(StepTested)

	t = a.cfg.Clock.Now()
	if err := a.switchTo(b.Hash); err != nil {
		clearPending()
		return fail(Failed, "%v", err)
	}
	res.Durations.Switch = a.since(t)
	a.hook(StepSwitched)

	t = a.cfg.Clock.Now()
	off := a.snapshot()
	res.Reloads++
	reloadErr := a.cfg.Reloader.Reload(ctx)
	res.Durations.Reload = a.since(t)
	var verifyErr error
	if reloadErr == nil {
		a.hook(StepReloaded)
		t = a.cfg.Clock.Now()
		verifyErr = a.verify(ctx, b.Hash, off, true)
		res.Durations.Verify = a.since(t)
	}
	if err := errors.Join(reloadErr, verifyErr); err != nil {
		res.NginxOutput = a.logSince(off.logOff)
		reason := err.Error()
		if line := lastErrorLine(res.NginxOutput); line != "" && !strings.Contains(reason, line) {
			reason += ": " + line
		}
		t = a.cfg.Clock.Now()
		res.State, res.Reason = a.rollback(ctx, old, reason, &res.Reloads)
		res.Durations.Rollback = a.since(t)
		clearPending()
		return res
	}
	a.hook(StepVerified)

	st.Previous, st.Current = old, b.Hash
	st.Pending, st.Step = "", ""
	st.History = append([]string{b.Hash}, slices.DeleteFunc(st.History, func(h string) bool { return h == b.Hash })...)
	if err := a.writeState(st); err != nil {
		// current already points at the verified release; Recover rolls
		// forward from the symlink, so this is not a failed apply.
		a.log.Error("apply: record state", "hash", b.Hash, "err", err)
	}
	a.hook(StepCommitted)
	if err := a.prune(st); err != nil {
		a.log.Warn("apply: prune", "err", err)
	}
	res.State = Applied
	return res
}

// rollback switches current back to old, reloads and verifies old. It
// returns RolledBack, or Failed when old cannot be verified either.
func (a *Applier) rollback(ctx context.Context, old, reason string, reloads *int) (State, string) {
	if old == "" {
		// Nothing to go back to: take current away so that a restart does
		// not start the bad tree.
		if err := os.Remove(a.path(currentLink)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return Failed, reason + "; remove current: " + err.Error()
		}
		_ = syncDir(a.cfg.StateDir)
		return Failed, reason + "; no previous release to roll back to"
	}
	if err := a.switchTo(old); err != nil {
		return Failed, reason + "; roll back: " + err.Error()
	}
	a.hook(StepRollbackSwitched)
	off := a.snapshot()
	*reloads++
	if err := a.cfg.Reloader.Reload(ctx); err != nil {
		return Failed, reason + "; roll back: " + err.Error()
	}
	// No failing fast here: nginx may still be logging the failed reload
	// (it retries a bind for 2.5 s) while it already serves old again.
	if err := a.verify(ctx, old, off, false); err != nil {
		return Failed, reason + "; roll back to " + old + ": " + err.Error()
	}
	return RolledBack, reason
}

// verify polls the status server until it answers hash, its status page
// answers and the workers of before have stopped accepting; or, with
// failFast, until nginx logs an [emerg] (a reload it could not carry out);
// or until the verify timeout passes.
func (a *Applier) verify(ctx context.Context, hash string, before snapshot, failFast bool) error {
	logOff := before.logOff
	ctx, cancel := context.WithTimeout(ctx, a.cfg.VerifyTimeout)
	defer cancel()
	deadline := a.cfg.Clock.Now().Add(a.cfg.VerifyTimeout)
	var last error
	for {
		gen, err := nginx.Generation(ctx, a.cfg.StatusURL)
		switch {
		case err != nil:
			last = err
		case gen != hash:
			last = fmt.Errorf("nginx serves generation %s, want %s", short(gen), short(hash))
		default:
			if _, err := nginx.Status(ctx, a.cfg.StatusURL); err != nil {
				last = err
				break
			}
			if w := stillAccepting(before.workers); len(w) > 0 {
				last = fmt.Errorf("workers %v of the previous generation still accept connections", w)
				break
			}
			return nil
		}
		// nginx keeps the old workers when a reload fails and says why in
		// an [emerg] line: no point waiting for the timeout.
		if line := lastErrorLine(a.logSince(logOff)); failFast && strings.Contains(line, "[emerg]") {
			return fmt.Errorf("nginx did not load generation %s: %s", short(hash), line)
		}
		if !a.cfg.Clock.Now().Before(deadline) {
			return fmt.Errorf("generation %s not live after %s: %w", short(hash), a.cfg.VerifyTimeout, last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("generation %s not live: %w (last: %v)", short(hash), ctx.Err(), last)
		case <-a.cfg.Clock.After(20 * time.Millisecond):
		}
	}
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// snapshot is what verify compares against: the error log size before a
// reload (lines after it are the reload's) and the workers then accepting.
type snapshot struct {
	logOff  int64
	workers []int
}

func (a *Applier) snapshot() snapshot {
	var s snapshot
	if st, err := os.Stat(a.cfg.ErrorLog); err == nil {
		s.logOff = st.Size()
	}
	if m, ok := a.cfg.Reloader.(master); ok {
		if pid, err := m.PID(); err == nil {
			s.workers = nginx.Workers(pid)
		}
	}
	return s
}

func stillAccepting(pids []int) []int {
	var out []int
	for _, p := range pids {
		if nginx.IsAcceptingWorker(p) {
			out = append(out, p)
		}
	}
	return out
}

// maxLogRead caps how much of the error log a result carries.
const maxLogRead = 16 << 10

// logSince returns the error log written after off (at most maxLogRead
// bytes, the last ones), plus the managed master's own output when it has
// exited.
func (a *Applier) logSince(off int64) string {
	var out []byte
	if fh, err := os.Open(a.cfg.ErrorLog); err == nil {
		if st, err := fh.Stat(); err == nil && st.Size() > off {
			if st.Size()-off > maxLogRead {
				off = st.Size() - maxLogRead
			}
			out = make([]byte, st.Size()-off)
			n, _ := fh.ReadAt(out, off)
			out = out[:n]
		}
		fh.Close()
	}
	if m, ok := a.cfg.Reloader.(*nginx.Child); ok && !isRunning(m) {
		o := m.Output()
		if len(o) > maxLogRead {
			o = o[len(o)-maxLogRead:]
		}
		out = append(out, o...)
	}
	return string(bytes.TrimSpace(out))
}

func isRunning(m *nginx.Child) bool {
	_, err := m.PID()
	return err == nil
}

// lastErrorLine returns the last [emerg], [alert] or [crit] line of out.
func lastErrorLine(out string) string {
	lines := strings.Split(out, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.Contains(l, "[emerg]") || strings.Contains(l, "[alert]") || strings.Contains(l, "[crit]") {
			return l
		}
	}
	return ""
}
