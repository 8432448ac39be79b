// Package nginx knows everything about nginx: it compiles a resource set into
// a bundle of configuration files, and runs the nginx binary (nginx -t, start,
// reload) with a fixed argument vector, never through a shell. It imports
// schema only: never hub, hub/store, relay, wire or pki.
package nginx

import (
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
)

// GenerationFile is the bundle file that makes the status server answer
// /nxmesh/generation with the bundle hash. It is derived from the hash, so the
// hash is computed over every other file.
const GenerationFile = "nxmesh/generation.conf"

// File is one file of a bundle.
type File struct {
	// Path is slash-separated and relative to the bundle root.
	Path string
	Data []byte
	// Secret marks private keys: written with mode 0600 and never logged.
	Secret bool
}

// Bundle is the complete, content-addressed set of nginx files for one agent.
// Two bundles with the same Hash have the same files, byte for byte.
type Bundle struct {
	// Hash is the hex sha256 of the canonical encoding of every file but
	// GenerationFile.
	Hash string
	// Files are sorted by Path and include GenerationFile.
	Files []File

	// hashed is set by Verify (atomically: Verify may run on one bundle
	// from several goroutines). A bundle built from this one that keeps
	// its first files (ApplyDelta) resumes hashing after them.
	hashed atomic.Pointer[hashStates]
}

// hashStates is the hash's running state after each content file (every
// file but GenerationFile) of files, in order, stateSize bytes each.
type hashStates struct {
	files  []File
	states []byte
}

// resumable is b's states when they are those of its Files: as long as
// Files is still the slice Verify hashed (files are never modified in
// place).
func (b *Bundle) resumable() []byte {
	h := b.hashed.Load()
	if h == nil || len(b.Files) == 0 || len(h.files) != len(b.Files) || &h.files[0] != &b.Files[0] {
		return nil
	}
	return h.states
}

// Seal sorts files, computes the bundle hash and adds GenerationFile. The
// files must not contain GenerationFile already.
func Seal(files []File) (*Bundle, error) {
	fs := slices.Clone(files)
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	for i, f := range fs {
		if err := checkPath(f.Path); err != nil {
			return nil, err
		}
		if f.Path == GenerationFile {
			return nil, fmt.Errorf("bundle file %s is reserved", f.Path)
		}
		if i > 0 && fs[i-1].Path == f.Path {
			return nil, fmt.Errorf("bundle file %s appears twice", f.Path)
		}
	}
	hash := hashFiles(fs)
	fs = append(fs, File{Path: GenerationFile, Data: generationConf(hash)})
	slices.SortFunc(fs, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return &Bundle{Hash: hash, Files: fs}, nil
}

// Verify checks that the files hash to b.Hash and that GenerationFile
// matches it: a bundle that arrived over the network is checked before use.
// It keeps the hash's running states for bundles built from b (ApplyDelta);
// goroutines may verify one bundle at once.
func (b *Bundle) Verify() error { return b.verifyFrom(nil) }

// verifyFrom is Verify for a bundle built from base: the hash resumes
// after the leading content files b shares with base, from base's state
// after them, rather than hashing them again. Every push rebuilds a
// bundle from the agent's live one; most of its files are the live one's.
func (b *Bundle) verifyFrom(base *Bundle) error {
	from, prior := 0, []byte(nil)
	if base != nil {
		if prior = base.resumable(); prior != nil {
			from = sharedContent(base, b)
		}
	}
	var gen []byte
	seen := false
	n := 0 // content files so far
	for i, f := range b.Files {
		if i > 0 && b.Files[i-1].Path >= f.Path {
			return fmt.Errorf("bundle files are not sorted or not unique at %s", f.Path)
		}
		if f.Path == GenerationFile {
			gen, seen = f.Data, true
			continue
		}
		// The first from are base's, whose paths passed when it was
		// verified.
		if n++; n <= from {
			continue
		}
		if err := checkPath(f.Path); err != nil {
			return err
		}
	}
	if !seen {
		return fmt.Errorf("bundle has no %s", GenerationFile)
	}
	got, states := hashContent(b.Files, from, prior, true)
	if got != b.Hash {
		return fmt.Errorf("bundle hash mismatch: files hash to %s, bundle says %s", got, b.Hash)
	}
	if string(gen) != string(generationConf(b.Hash)) {
		return fmt.Errorf("bundle %s does not match its hash", GenerationFile)
	}
	b.hashed.Store(&hashStates{files: b.Files, states: states})
	return nil
}

// File returns the file at p, or nil.
func (b *Bundle) File(p string) *File {
	i, ok := slices.BinarySearchFunc(b.Files, p, func(f File, p string) int { return strings.Compare(f.Path, p) })
	if !ok {
		return nil
	}
	return &b.Files[i]
}

// Write writes the bundle's files under dir, creating directories as needed.
// Secret files get mode 0600, others 0644. Each file is synced so that a
// crash after Write returns cannot leave a partially written tree behind a
// later rename.
func (b *Bundle) Write(dir string) error {
	for _, f := range b.Files {
		p := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write bundle %s: %w", b.Hash, err)
		}
		mode := os.FileMode(0o644)
		if f.Secret {
			mode = 0o600
		}
		if err := writeSync(p, f.Data, mode); err != nil {
			return fmt.Errorf("write bundle %s: %w", b.Hash, err)
		}
	}
	return nil
}

func writeSync(p string, data []byte, mode os.FileMode) error {
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
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
	return fh.Close()
}

// hashFiles is the bundle hash of files, which do not include
// GenerationFile.
func hashFiles(files []File) string {
	h, _ := hashContent(files, 0, nil, false)
	return h
}

// runningHash is what the bundle hash needs of sha256's digest: saving
// and restoring its running state.
type runningHash interface {
	hash.Hash
	encoding.BinaryAppender
	encoding.BinaryUnmarshaler
}

// stateSize is the length of one saved running state.
var stateSize = func() int {
	st, err := sha256.New().(runningHash).AppendBinary(nil)
	if err != nil {
		panic(err)
	}
	return len(st)
}()

// hashContent is the canonical encoding's hash of every file but
// GenerationFile: for each in path order, the uvarint length and bytes of
// the path, a flags byte (1 = secret), then the uvarint length and bytes
// of the data. It resumes after the first from of them, from their state
// in prior (the states of a bundle whose first from content files are
// these). With keep, it returns the state after each content file too.
func hashContent(files []File, from int, prior []byte, keep bool) (string, []byte) {
	h := sha256.New().(runningHash)
	if from > len(prior)/stateSize {
		from = len(prior) / stateSize
	}
	var states []byte
	if from > 0 {
		if err := h.UnmarshalBinary(prior[(from-1)*stateSize : from*stateSize]); err != nil {
			from = 0
			h.Reset()
		}
	}
	if keep {
		states = make([]byte, 0, len(files)*stateSize)
		states = append(states, prior[:from*stateSize]...)
	}
	// Each file's path and lengths go in as one write, its data as
	// another.
	head := make([]byte, 0, 256)
	n := 0
	for _, f := range files {
		if f.Path == GenerationFile {
			continue
		}
		if n++; n <= from {
			continue
		}
		head = binary.AppendUvarint(head[:0], uint64(len(f.Path)))
		head = append(head, f.Path...)
		flags := byte(0)
		if f.Secret {
			flags = 1
		}
		head = append(head, flags)
		head = binary.AppendUvarint(head, uint64(len(f.Data)))
		h.Write(head)
		h.Write(f.Data)
		if keep {
			states, _ = h.AppendBinary(states)
		}
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])), states
}

// sharedContent is how many leading content files (every file but
// GenerationFile) b has that base has too: the same path, flags and bytes
// in the same place.
func sharedContent(base, b *Bundle) int {
	n, i, j := 0, 0, 0
	for {
		for i < len(base.Files) && base.Files[i].Path == GenerationFile {
			i++
		}
		for j < len(b.Files) && b.Files[j].Path == GenerationFile {
			j++
		}
		if i == len(base.Files) || j == len(b.Files) {
			return n
		}
		x, y := base.Files[i], b.Files[j]
		// Unchanged files share their data with base: comparing the
		// same bytes returns at once.
		if x.Path != y.Path || x.Secret != y.Secret || string(x.Data) != string(y.Data) {
			return n
		}
		n, i, j = n+1, i+1, j+1
	}
}

func generationConf(hash string) []byte {
	return []byte("# Generated by NxMesh: answers the bundle hash.\n" +
		"location = /nxmesh/generation {\n" +
		"    default_type text/plain;\n" +
		"    return 200 \"" + hash + "\";\n" +
		"}\n")
}

var errBadPath = errors.New("bundle file path must be relative, clean and slash-separated")

func checkPath(p string) error {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == "." || strings.HasPrefix(p, "../") || p == ".." ||
		strings.ContainsAny(p, "\\\x00") {
		return fmt.Errorf("%w: %q", errBadPath, p)
	}
	return nil
}
