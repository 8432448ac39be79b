package agent

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// DriftPolicy says what to do about a live tree that differs from its bundle.
type DriftPolicy string

// Drift policies.
const (
	// DriftAlert reports drift and leaves the files alone.
	DriftAlert DriftPolicy = "alert"
	// DriftRevert reports drift, rewrites the files from the stored bundle
	// and reloads nginx.
	DriftRevert DriftPolicy = "revert"
)

// ChangeKind is how a live file differs from the bundle.
type ChangeKind string

// Kinds of drift.
const (
	Modified ChangeKind = "modified"
	Added    ChangeKind = "added"
	Removed  ChangeKind = "removed"
)

// FileDrift is one live file that differs from the bundle.
type FileDrift struct {
	// Path is relative to the release root, slash-separated.
	Path string
	Kind ChangeKind
	// Diff is a unified diff from the bundle's content to the live one,
	// capped at maxDiff bytes. Secret files get no diff.
	Diff string
}

// Drift is a hand edit of the live tree.
type Drift struct {
	// Hash is the live release.
	Hash  string
	Files []FileDrift
	// Reverted is true when the files were rewritten and nginx reloaded
	// and verified.
	Reverted bool
}

// Diff returns the diffs of every file, concatenated.
func (d *Drift) Diff() string {
	var b strings.Builder
	for _, f := range d.Files {
		b.WriteString(f.Diff)
	}
	return b.String()
}

// maxDiff caps each file's diff: drift reports travel to the hub.
const maxDiff = 8 << 10

// CheckDrift hashes the live tree and compares it with the release's stored
// bundle. It returns nil when nothing drifted. Under DriftRevert the files
// are rewritten from the bundle and nginx is reloaded and verified.
func (a *Applier) CheckDrift(ctx context.Context) (*Drift, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	live, err := a.liveHash()
	if err != nil || live == "" {
		return nil, err
	}
	b, changes, err := a.checkRelease(live)
	if err != nil {
		return nil, fmt.Errorf("check drift: %w", err)
	}
	if len(changes) == 0 {
		return nil, nil
	}
	d := &Drift{Hash: live}
	for _, c := range changes {
		fd := FileDrift{Path: c.path, Kind: c.kind}
		if f := b.File(c.path); f != nil && f.Secret {
			fd.Diff = fmt.Sprintf("--- a/%s\n+++ b/%s\n(secret file: no diff)\n", c.path, c.path)
		} else {
			fd.Diff = unifiedDiff(c.path, string(c.want), string(c.got), c.kind, maxDiff)
		}
		d.Files = append(d.Files, fd)
	}
	a.log.Warn("drift", "hash", live, "files", len(d.Files), "policy", a.cfg.DriftPolicy)
	if a.cfg.DriftPolicy != DriftRevert {
		return d, nil
	}
	if err := a.repairRelease(b, changes); err != nil {
		return d, fmt.Errorf("revert drift: %w", err)
	}
	// The hand edit may have been reloaded already: reload unconditionally
	// so that nginx runs the bundle again.
	off := a.snapshot()
	if err := a.cfg.Reloader.Reload(ctx); err != nil {
		return d, fmt.Errorf("revert drift: %w", err)
	}
	if err := a.verify(ctx, live, off, true); err != nil {
		return d, fmt.Errorf("revert drift: %w", err)
	}
	d.Reverted = true
	return d, nil
}

// RunDrift checks for drift every interval until ctx ends, handing each
// drift to Config.OnDrift. Errors are logged and the loop goes on.
func (a *Applier) RunDrift(ctx context.Context, interval time.Duration) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.cfg.Clock.After(interval):
		}
		d, err := a.CheckDrift(ctx)
		if err != nil {
			a.log.Error("drift check", "err", err)
		}
		if d != nil && a.cfg.OnDrift != nil {
			a.cfg.OnDrift(d)
		}
	}
}

// unifiedDiff renders a line diff of want -> got with three lines of
// context, cut at max bytes.
func unifiedDiff(path, want, got string, kind ChangeKind, max int) string {
	from, to := "a/"+path, "b/"+path
	switch kind {
	case Added:
		from = "/dev/null"
	case Removed:
		to = "/dev/null"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", from, to)
	x, y := splitLines(want), splitLines(got)
	ops := lineDiff(x, y)
	const context = 3
	// Group ops into hunks: runs of changes with up to 2*context equal
	// lines between them.
	for i := 0; i < len(ops); {
		if ops[i].kind == ' ' {
			i++
			continue
		}
		start := max0(i - context)
		end := i
		for j := i; j < len(ops); j++ {
			if ops[j].kind != ' ' {
				end = j
			} else if j-end > 2*context {
				break
			}
		}
		stop := min(len(ops), end+context+1)
		hx, hy, nx, ny := -1, -1, 0, 0
		for _, o := range ops[start:stop] {
			if o.kind != '+' {
				if hx < 0 {
					hx = o.x
				}
				nx++
			}
			if o.kind != '-' {
				if hy < 0 {
					hy = o.y
				}
				ny++
			}
		}
		fmt.Fprintf(&b, "@@ -%d,%d +%d,%d @@\n", hx+1, nx, hy+1, ny)
		for _, o := range ops[start:stop] {
			line := ""
			if o.kind == '+' {
				line = y[o.y]
			} else {
				line = x[o.x]
			}
			b.WriteByte(o.kind)
			b.WriteString(line)
			b.WriteByte('\n')
			if b.Len() > max {
				s := b.String()[:max]
				return s + "\n... diff truncated\n"
			}
		}
		i = stop
	}
	return b.String()
}

func max0(i int) int {
	if i < 0 {
		return 0
	}
	return i
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

type diffOp struct {
	kind byte // ' ', '-', '+'
	x, y int  // line indexes in the old and new text
}

// maxLCSCells bounds the LCS table; beyond it the differing middle is shown
// as removed then added.
const maxLCSCells = 4 << 20

// lineDiff returns an edit script from x to y: common prefix and suffix are
// matched directly, the middle with an LCS table when it is small enough.
func lineDiff(x, y []string) []diffOp {
	var ops []diffOp
	p := 0
	for p < len(x) && p < len(y) && x[p] == y[p] {
		ops = append(ops, diffOp{' ', p, p})
		p++
	}
	s := 0
	for s < len(x)-p && s < len(y)-p && x[len(x)-1-s] == y[len(y)-1-s] {
		s++
	}
	mx, my := x[p:len(x)-s], y[p:len(y)-s]
	if len(mx)*len(my) > maxLCSCells || len(mx) == 0 || len(my) == 0 {
		for i := range mx {
			ops = append(ops, diffOp{'-', p + i, p})
		}
		for j := range my {
			ops = append(ops, diffOp{'+', p + len(mx), p + j})
		}
	} else {
		// lcs[i][j] is the LCS length of mx[i:] and my[j:].
		n, m := len(mx), len(my)
		lcs := make([][]int32, n+1)
		for i := range lcs {
			lcs[i] = make([]int32, m+1)
		}
		for i := n - 1; i >= 0; i-- {
			for j := m - 1; j >= 0; j-- {
				if mx[i] == my[j] {
					lcs[i][j] = lcs[i+1][j+1] + 1
				} else {
					lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
				}
			}
		}
		i, j := 0, 0
		for i < n || j < m {
			switch {
			case i < n && j < m && mx[i] == my[j]:
				ops = append(ops, diffOp{' ', p + i, p + j})
				i++
				j++
			case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
				ops = append(ops, diffOp{'-', p + i, p + j})
				i++
			default:
				ops = append(ops, diffOp{'+', p + i, p + j})
				j++
			}
		}
	}
	for k := 0; k < s; k++ {
		ops = append(ops, diffOp{' ', len(x) - s + k, len(y) - s + k})
	}
	return ops
}
