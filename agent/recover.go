package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nxmesh/nxmesh/nginx"
)

// Outcome says what Recover did with an apply that a crash interrupted.
type Outcome string

// Recovery outcomes.
const (
	// NoneInterrupted: no apply was in progress.
	NoneInterrupted Outcome = ""
	// RolledForward: the interrupted apply had switched current; its
	// release was reloaded and verified and stays live.
	RolledForward Outcome = "rolled_forward"
	// RolledBackOnRecover: the interrupted apply had not switched current,
	// or its release failed verification; the previous release is live.
	RolledBackOnRecover Outcome = "rolled_back"
)

// Recovery reports the state Recover left the agent in.
type Recovery struct {
	// Live is the hash current points at after recovery ("" when no
	// release was ever applied) and Previous the one before it.
	Live, Previous string
	// Interrupted is the hash of the apply a crash interrupted, if any,
	// and Outcome what became of it.
	Interrupted string
	Outcome     Outcome
	// Step is the last step the interrupted apply recorded.
	Step Step
	// Removed lists leftover temp paths that were deleted.
	Removed []string
	// Repaired lists files of the live release that did not match its
	// bundle and were rewritten from it.
	Repaired []string
	// Verified is true when nginx answered Live's generation.
	Verified bool
}

// Recover brings the state directory to a consistent state after a start or
// a crash: it deletes temp directories, makes sure current points at a
// complete release (its files checked against the stored bundle), decides
// the fate of an interrupted apply, reloads nginx when it does not serve the
// live generation, and verifies it. The error is non-nil when nginx could
// not be brought to serve Live.
func (a *Applier) Recover(ctx context.Context) (*Recovery, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rec := &Recovery{}
	entries, err := os.ReadDir(a.path(releasesDir))
	if err != nil {
		return rec, fmt.Errorf("recover: %w", err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			p := a.path(releasesDir, e.Name())
			if err := os.RemoveAll(p); err != nil {
				return rec, fmt.Errorf("recover: %w", err)
			}
			rec.Removed = append(rec.Removed, p)
		}
	}
	for _, p := range []string{a.path(currentLink + ".tmp"), a.path(stateFile + ".tmp")} {
		if err := os.Remove(p); err == nil {
			rec.Removed = append(rec.Removed, p)
		}
	}

	st, err := a.readState()
	if err != nil {
		return rec, fmt.Errorf("recover: %w", err)
	}
	live, err := a.liveHash()
	if err != nil {
		return rec, fmt.Errorf("recover: %w", err)
	}
	rec.Interrupted, rec.Step = st.Pending, st.Step

	// current must name a release whose manifest loads; otherwise fall back
	// to the last release state.json recorded as good.
	if live != "" {
		if _, err := a.loadBundle(live); err != nil {
			a.log.Error("recover: current release unusable", "hash", live, "err", err)
			live = ""
		}
	}
	if live == "" {
		for _, h := range []string{st.Current, st.Previous} {
			if h == "" {
				continue
			}
			if _, err := a.loadBundle(h); err == nil {
				if err := a.switchTo(h); err != nil {
					return rec, fmt.Errorf("recover: %w", err)
				}
				live = h
				break
			}
		}
	}
	if live == "" {
		// Never applied anything (or nothing usable is left).
		if err := os.Remove(a.path(currentLink)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return rec, fmt.Errorf("recover: %w", err)
		}
		st = persisted{}
		if err := a.writeState(st); err != nil {
			return rec, fmt.Errorf("recover: %w", err)
		}
		if rec.Interrupted != "" {
			rec.Outcome = RolledBackOnRecover
		}
		return rec, nil
	}
	if err := a.repair(live, rec); err != nil {
		return rec, fmt.Errorf("recover: %w", err)
	}

	previous := st.Current
	if previous == live {
		previous = st.Previous
	}
	switch {
	case st.Pending == "":
	case live == st.Pending:
		// The crash came after the switch: finish the apply if the new
		// release verifies, else go back to the one state.json called
		// current. The crash may have come between the reload signal and
		// the verify, with the old workers still accepting beside the new
		// ones: one answer of the new generation proves nothing then, so
		// reload again and wait for every worker seen now to stop.
		if err := a.reloadLive(ctx, live); err == nil {
			rec.Outcome = RolledForward
			break
		} else if st.Current == "" || st.Current == live {
			rec.Live = live
			return rec, fmt.Errorf("recover: interrupted apply %s does not verify and there is no previous release: %w", live, err)
		} else {
			a.log.Warn("recover: interrupted apply does not verify, rolling back", "hash", live, "err", err)
			if err := a.repair(st.Current, rec); err != nil {
				return rec, fmt.Errorf("recover: %w", err)
			}
			if err := a.switchTo(st.Current); err != nil {
				return rec, fmt.Errorf("recover: %w", err)
			}
			live, previous = st.Current, st.Previous
			rec.Outcome = RolledBackOnRecover
		}
	default:
		rec.Outcome = RolledBackOnRecover
	}
	rec.Live, rec.Previous = live, previous

	if live != st.Current || st.Pending != "" {
		if live != st.Current {
			st.Previous, st.Current = previous, live
			st.History = append([]string{live}, removeHash(st.History, live)...)
		}
		st.Pending, st.Step = "", ""
		if err := a.writeState(st); err != nil {
			return rec, fmt.Errorf("recover: %w", err)
		}
	}
	if err := a.ensureLive(ctx, live); err != nil {
		return rec, fmt.Errorf("recover: %w", err)
	}
	rec.Verified = true
	if err := a.prune(st); err != nil {
		a.log.Warn("recover: prune", "err", err)
	}
	a.log.Info("recover", "live", live, "interrupted", rec.Interrupted, "outcome", rec.Outcome)
	return rec, nil
}

// repair rewrites files of releases/<hash> that differ from its bundle.
func (a *Applier) repair(hash string, rec *Recovery) error {
	b, changes, err := a.checkRelease(hash)
	if err != nil {
		return err
	}
	if len(changes) == 0 {
		return nil
	}
	for _, c := range changes {
		rec.Repaired = append(rec.Repaired, c.path)
	}
	return a.repairRelease(b, changes)
}

// ensureLive reloads nginx unless it already serves hash, then verifies.
func (a *Applier) ensureLive(ctx context.Context, hash string) error {
	if gen, err := nginx.Generation(ctx, a.cfg.StatusURL); err == nil && gen == hash {
		return nil
	}
	return a.reloadLive(ctx, hash)
}

// reloadLive reloads nginx and verifies hash: nginx answers it and none of
// the workers running before the reload accept connections any more.
func (a *Applier) reloadLive(ctx context.Context, hash string) error {
	off := a.snapshot()
	if err := a.cfg.Reloader.Reload(ctx); err != nil {
		return err
	}
	return a.verify(ctx, hash, off, true)
}

func removeHash(hs []string, h string) []string {
	out := make([]string, 0, len(hs))
	for _, x := range hs {
		if x != h {
			out = append(out, x)
		}
	}
	return out
}
