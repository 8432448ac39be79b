package agent

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/wire"
	"golang.org/x/sys/unix"
)

// State directory layout. The state directory is also nginx's -p prefix, so
// pid, logs and temp paths in the main config resolve inside it.
const (
	releasesDir  = "releases"
	currentLink  = "current"
	stateFile    = "state.json"
	manifestName = ".nxmesh-bundle.json"
	tmpPrefix    = ".tmp-"
)

// persisted is state.json. The current symlink is the truth about which
// release is live; state.json adds what the symlink cannot say: the previous
// release, the apply in progress, and the order of recent releases.
type persisted struct {
	Current  string `json:"current,omitempty"`
	Previous string `json:"previous,omitempty"`
	// Pending is the hash of an apply in progress, Step the step it reached.
	Pending string    `json:"pending,omitempty"`
	Step    Step      `json:"step,omitempty"`
	History []string  `json:"history,omitempty"` // applied hashes, newest first
	Updated time.Time `json:"updated"`
}

func (a *Applier) path(elem ...string) string {
	return filepath.Join(append([]string{a.cfg.StateDir}, elem...)...)
}

func (a *Applier) releaseDir(hash string) string { return a.path(releasesDir, hash) }

// ConfPath is the main config nginx runs: <state>/current/nginx.conf.
func (a *Applier) ConfPath() string { return a.path(currentLink, "nginx.conf") }

func (a *Applier) readState() (persisted, error) {
	var st persisted
	data, err := os.ReadFile(a.path(stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read agent state: %w", err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("read agent state %s: %w", a.path(stateFile), err)
	}
	return st, nil
}

// writeState replaces state.json atomically: temp file, fsync, rename, fsync
// of the directory.
func (a *Applier) writeState(st persisted) error {
	st.Updated = a.cfg.Clock.Now().UTC()
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := writeFileAtomic(a.path(stateFile), data, 0o600); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	return nil
}

func writeFileAtomic(p string, data []byte, mode os.FileMode) error {
	tmp := p + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := fh.Write(data); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	fh, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer fh.Close()
	return fh.Sync()
}

// liveHash returns the hash the current symlink points at, "" when there is
// no current release.
func (a *Applier) liveHash() (string, error) {
	target, err := os.Readlink(a.path(currentLink))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read current release: %w", err)
	}
	return filepath.Base(target), nil
}

// switchTo points current at releases/<hash> atomically: a new symlink is
// renamed over the old one, then the state directory is synced.
func (a *Applier) switchTo(hash string) error {
	tmp := a.path(currentLink + ".tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join(releasesDir, hash), tmp); err != nil {
		return fmt.Errorf("switch to release %s: %w", hash, err)
	}
	if err := os.Rename(tmp, a.path(currentLink)); err != nil {
		return fmt.Errorf("switch to release %s: %w", hash, err)
	}
	if err := syncDir(a.cfg.StateDir); err != nil {
		return fmt.Errorf("switch to release %s: %w", hash, err)
	}
	return nil
}

// stage writes b under releases/.tmp-<hash>-<rand>, syncs every file and
// directory, and renames it to releases/<hash>. A release directory that
// exists is therefore complete. It reports whether it created the release
// (false: it was already there and intact).
func (a *Applier) stage(b *nginx.Bundle) (created bool, err error) {
	final := a.releaseDir(b.Hash)
	if _, err := os.Stat(final); err == nil {
		if _, mismatch, err := a.checkRelease(b.Hash); err == nil && len(mismatch) == 0 {
			return false, nil
		}
		// A damaged release that is not live is rebuilt from the bundle.
		live, _ := a.liveHash()
		if live == b.Hash {
			return false, fmt.Errorf("stage release %s: it is live and does not match its bundle", b.Hash)
		}
		if err := os.RemoveAll(final); err != nil {
			return false, fmt.Errorf("stage release %s: %w", b.Hash, err)
		}
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	tmp := a.path(releasesDir, tmpPrefix+b.Hash+"-"+hex.EncodeToString(rnd[:]))
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return false, fmt.Errorf("stage release %s: %w", b.Hash, err)
	}
	if err := writeRelease(tmp, b); err != nil {
		_ = os.RemoveAll(tmp)
		return false, fmt.Errorf("stage release %s: %w", b.Hash, err)
	}
	a.hook(StepStaged)
	if err := os.Rename(tmp, final); err != nil {
		_ = os.RemoveAll(tmp)
		return false, fmt.Errorf("stage release %s: %w", b.Hash, err)
	}
	if err := syncDir(a.path(releasesDir)); err != nil {
		return false, fmt.Errorf("stage release %s: %w", b.Hash, err)
	}
	a.hook(StepRenamed)
	return true, nil
}

// writeRelease writes the bundle files and the manifest (the serialized
// bundle, for drift revert and restarts without a hub) into dir, then makes
// all of it durable with one syncfs(2) instead of an fsync per file: a
// thousand-vhost bundle would otherwise spend a second in fsyncs.
func writeRelease(dir string, b *nginx.Bundle) error {
	for _, f := range b.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if f.Secret {
			mode = 0o600
		}
		if err := os.WriteFile(p, f.Data, mode); err != nil {
			return err
		}
	}
	manifest, err := json.Marshal(b)
	if err != nil {
		return err
	}
	// 0600: the manifest holds the private keys of the bundle.
	if err := os.WriteFile(filepath.Join(dir, manifestName), manifest, 0o600); err != nil {
		return err
	}
	return syncFS(dir)
}

// syncFS flushes the file system that holds dir.
func syncFS(dir string) error {
	fh, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := unix.Syncfs(int(fh.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// loadBundle reads and verifies the manifest of releases/<hash>.
func (a *Applier) loadBundle(hash string) (*nginx.Bundle, error) {
	data, err := os.ReadFile(filepath.Join(a.releaseDir(hash), manifestName))
	if err != nil {
		return nil, fmt.Errorf("load release %s: %w", hash, err)
	}
	var b nginx.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("load release %s: %w", hash, err)
	}
	if err := b.Verify(); err != nil {
		return nil, fmt.Errorf("load release %s: %w", hash, err)
	}
	if b.Hash != hash {
		return nil, fmt.Errorf("load release %s: manifest is for %s", hash, b.Hash)
	}
	return &b, nil
}

// Kept implements Keeper: the bundle of releases/<hash>, verified, or nil
// when there is no such release. The hash comes from the network, so it
// must look like one before it becomes a path.
func (a *Applier) Kept(hash string) *nginx.Bundle {
	if !wire.IsHash(hash) {
		return nil
	}
	b, err := a.loadBundle(hash)
	if err != nil {
		return nil
	}
	return b
}

// fileChange is one difference between a release tree and its bundle.
type fileChange struct {
	path string
	kind ChangeKind
	// want is the bundle's content (nil when added), got the disk's (nil
	// when removed).
	want, got []byte
}

// checkRelease compares the files under releases/<hash> with its manifest.
func (a *Applier) checkRelease(hash string) (*nginx.Bundle, []fileChange, error) {
	b, err := a.loadBundle(hash)
	if err != nil {
		return nil, nil, err
	}
	root := a.releaseDir(hash)
	var changes []fileChange
	seen := make(map[string]bool, len(b.Files))
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == manifestName {
			return nil
		}
		seen[rel] = true
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		f := b.File(rel)
		switch {
		case f == nil:
			changes = append(changes, fileChange{path: rel, kind: Added, got: got})
		case !bytes.Equal(f.Data, got):
			changes = append(changes, fileChange{path: rel, kind: Modified, want: f.Data, got: got})
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("check release %s: %w", hash, err)
	}
	for _, f := range b.Files {
		if !seen[f.Path] {
			changes = append(changes, fileChange{path: f.Path, kind: Removed, want: f.Data})
		}
	}
	slices.SortFunc(changes, func(x, y fileChange) int { return strings.Compare(x.path, y.path) })
	return b, changes, nil
}

// repairRelease rewrites a release tree from its manifest: changed and
// removed files are written again, added files are deleted.
func (a *Applier) repairRelease(b *nginx.Bundle, changes []fileChange) error {
	root := a.releaseDir(b.Hash)
	for _, c := range changes {
		if c.kind == Added {
			if err := os.Remove(filepath.Join(root, filepath.FromSlash(c.path))); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("repair release %s: %w", b.Hash, err)
			}
		}
	}
	if err := b.Write(root); err != nil {
		return fmt.Errorf("repair release %s: %w", b.Hash, err)
	}
	return nil
}

// prune removes releases beyond the newest keep of the history, never the
// current or the previous one, and any leftover temp directory.
func (a *Applier) prune(st persisted) error {
	keep := map[string]bool{st.Current: true, st.Previous: true}
	for i, h := range st.History {
		if i >= a.cfg.KeepReleases {
			break
		}
		keep[h] = true
	}
	entries, err := os.ReadDir(a.path(releasesDir))
	if err != nil {
		return fmt.Errorf("prune releases: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if (wire.IsHash(name) && !keep[name]) || strings.HasPrefix(name, tmpPrefix) {
			if err := os.RemoveAll(a.path(releasesDir, name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("prune releases: %w", err)
	}
	return nil
}
