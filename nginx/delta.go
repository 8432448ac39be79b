package nginx

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// deltaMagic starts every encoded delta; the trailing digit is the format
// version.
const deltaMagic = "NXD1"

// Diff encodes what turns from into to: "NXD1", the files of to that from
// lacks or holds with other bytes or flags (the bundle encoding's file
// count and files, in path order), then the uvarint count and the
// length-prefixed paths of from's files that to lacks. A small change to a
// large bundle is a small delta; ApplyDelta rebuilds to from from and it.
func Diff(from, to *Bundle) []byte {
	var changed []File
	var removed []string
	i, j := 0, 0
	for i < len(from.Files) || j < len(to.Files) {
		switch {
		case j == len(to.Files) || (i < len(from.Files) && from.Files[i].Path < to.Files[j].Path):
			removed = append(removed, from.Files[i].Path)
			i++
		case i == len(from.Files) || to.Files[j].Path < from.Files[i].Path:
			changed = append(changed, to.Files[j])
			j++
		default:
			a, b := from.Files[i], to.Files[j]
			if a.Secret != b.Secret || string(a.Data) != string(b.Data) {
				changed = append(changed, b)
			}
			i++
			j++
		}
	}
	out := append([]byte(deltaMagic), binary.AppendUvarint(nil, uint64(len(changed)))...)
	for _, f := range changed {
		out = appendFile(out, f)
	}
	out = binary.AppendUvarint(out, uint64(len(removed)))
	for _, p := range removed {
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
	}
	return out
}

// ApplyDelta rebuilds the bundle hash from base and a delta made by Diff,
// refusing input over lim (zero fields: DefaultLimits) as UnmarshalBundle
// does, and Verifies the result: it returns a bundle only when it is
// exactly the one hash names, so a delta made against another base fails
// with a hash mismatch and never yields a wrong bundle. Unchanged files
// share their data with base; bundles are never modified in place.
func ApplyDelta(base *Bundle, delta []byte, hash string, lim Limits) (*Bundle, error) {
	d, err := newDecoder(delta, deltaMagic, lim)
	if err != nil {
		return nil, err
	}
	changed, err := d.files()
	if err != nil {
		return nil, err
	}
	// A removed path takes at least 2 bytes (length and one byte).
	nrm, err := d.count("removed count", 2)
	if err != nil {
		return nil, err
	}
	removed := make([]string, 0, nrm)
	for i := range nrm {
		p, err := d.path(i)
		if err != nil {
			return nil, err
		}
		removed = append(removed, p)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	for _, list := range [][]string{pathsOf(changed), removed} {
		for i := 1; i < len(list); i++ {
			if list[i-1] >= list[i] {
				return nil, fmt.Errorf("%w: delta paths are not sorted or not unique at %q", ErrBadEncoding, list[i])
			}
		}
	}

	files := make([]File, 0, len(base.Files)+len(changed))
	c := 0
	for _, f := range base.Files {
		for c < len(changed) && changed[c].Path < f.Path {
			files = append(files, changed[c])
			c++
		}
		switch {
		case c < len(changed) && changed[c].Path == f.Path:
			files = append(files, changed[c])
			c++
		case contains(removed, f.Path):
		default:
			files = append(files, f)
		}
	}
	files = append(files, changed[c:]...)
	if len(files) > d.lim.MaxFiles {
		return nil, fmt.Errorf("%w: %d files, limit %d", ErrBadEncoding, len(files), d.lim.MaxFiles)
	}
	b := &Bundle{Hash: hash, Files: files}
	if err := b.verifyFrom(base); err != nil {
		return nil, fmt.Errorf("delta from %s: %w", base.Hash, err)
	}
	return b, nil
}

func pathsOf(files []File) []string {
	ps := make([]string, len(files))
	for i, f := range files {
		ps[i] = f.Path
	}
	return ps
}

// contains reports whether the sorted list holds p.
func contains(sorted []string, p string) bool {
	_, ok := slices.BinarySearchFunc(sorted, p, strings.Compare)
	return ok
}
