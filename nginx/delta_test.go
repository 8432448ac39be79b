package nginx

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

func sealT(t testing.TB, files ...File) *Bundle {
	t.Helper()
	b, err := Seal(files)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBundle(t *testing.T, got, want *Bundle) {
	t.Helper()
	if got.Hash != want.Hash || len(got.Files) != len(want.Files) {
		t.Fatalf("got %d files hash %s, want %d files hash %s", len(got.Files), got.Hash, len(want.Files), want.Hash)
	}
	for i := range want.Files {
		g, w := got.Files[i], want.Files[i]
		if g.Path != w.Path || g.Secret != w.Secret || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("file %d: got %s secret=%v %q, want %s secret=%v %q", i, g.Path, g.Secret, g.Data, w.Path, w.Secret, w.Data)
		}
	}
}

func TestDeltaRoundTrip(t *testing.T) {
	from := sealT(t,
		File{Path: "nginx.conf", Data: []byte("events {}\nhttp { include vhosts/*.conf; }\n")},
		File{Path: "certs/a.key", Data: []byte("KEY"), Secret: true},
		File{Path: "vhosts/a.conf", Data: []byte("server { listen 80; }\n")},
		File{Path: "vhosts/b.conf", Data: []byte("server { listen 81; }\n")},
	)
	tests := []struct {
		name        string
		to          *Bundle
		changed     int // files in the delta, GenerationFile included
		unchangedOK bool
	}{
		{"one file edited", sealT(t,
			File{Path: "nginx.conf", Data: []byte("events {}\nhttp { include vhosts/*.conf; }\n")},
			File{Path: "certs/a.key", Data: []byte("KEY"), Secret: true},
			File{Path: "vhosts/a.conf", Data: []byte("server { listen 8080; }\n")},
			File{Path: "vhosts/b.conf", Data: []byte("server { listen 81; }\n")},
		), 2, true},
		{"added, removed, secret flag changed", sealT(t,
			File{Path: "nginx.conf", Data: []byte("events {}\nhttp { include vhosts/*.conf; }\n")},
			File{Path: "certs/a.key", Data: []byte("KEY")},
			File{Path: "vhosts/0.conf", Data: []byte("server { listen 79; }\n")},
			File{Path: "vhosts/c.conf", Data: []byte("server { listen 82; }\n")},
		), 4, true},
		{"everything removed", sealT(t), 1, true},
		{"identical", from, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			delta := Diff(from, tc.to)
			got, err := ApplyDelta(from, delta, tc.to.Hash, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			sameBundle(t, got, tc.to)
			d, _ := newDecoder(delta, deltaMagic, Limits{})
			changed, err := d.files()
			if err != nil || len(changed) != tc.changed {
				t.Errorf("delta carries %d files (err %v), want %d", len(changed), err, tc.changed)
			}
			if full, _ := tc.to.MarshalBinary(); tc.changed < len(tc.to.Files) && len(delta) >= len(full) {
				t.Errorf("delta is %d bytes, the whole bundle %d", len(delta), len(full))
			}
		})
	}
}

func TestApplyDeltaRefuses(t *testing.T) {
	from := codecBundle(t)
	to := sealT(t, File{Path: "nginx.conf", Data: []byte("events {}\nhttp { }\n")}, File{Path: "z.conf", Data: []byte("z")})
	good := Diff(from, to)
	// A base the delta was not made against: its extra file survives.
	other := sealT(t, File{Path: "nginx.conf", Data: []byte("other")}, File{Path: "w.conf", Data: []byte("w")})
	// A delta whose changed files are out of order: z.conf before nginx.conf.
	unsorted := []byte(deltaMagic + "\x02" + "\x06z.conf\x00\x01z" + "\x0anginx.conf\x00\x01x" + "\x00")
	tests := []struct {
		name  string
		base  *Bundle
		delta []byte
		hash  string
		lim   Limits
		want  string
		enc   bool
	}{
		{"another base", other, good, to.Hash, Limits{}, "hash mismatch", false},
		{"wrong hash", from, good, strings.Repeat("0", 64), Limits{}, "hash mismatch", false},
		{"no magic", from, []byte("NXB1\x00\x00"), to.Hash, Limits{}, "NXD1", true},
		{"truncated", from, good[:len(good)-1], to.Hash, Limits{}, "exceeds the remaining", true},
		{"trailing", from, append(append([]byte(nil), good...), 0), to.Hash, Limits{}, "trailing", true},
		{"unsorted", from, unsorted, to.Hash, Limits{}, "not sorted", true},
		{"too many files in the result", from, good, to.Hash, Limits{MaxFiles: 2}, "limit 2", true},
		{"file too large", from, good, to.Hash, Limits{MaxFileSize: 4}, "limit 4", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ApplyDelta(tc.base, tc.delta, tc.hash, tc.lim)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if errors.Is(err, ErrBadEncoding) != tc.enc {
				t.Errorf("errors.Is(err, ErrBadEncoding) = %v, want %v", !tc.enc, tc.enc)
			}
		})
	}
}

// TestApplyDeltaResumesHash: a bundle built from a verified base hashes
// only from its first file that differs from the base's, and ends with
// the running states a full Verify computes; a base whose Files were
// swapped after it was verified is hashed in full. That the states are
// used, not just kept: given another bundle's states, a base yields a
// hash mismatch exactly when the new bundle shares files with it.
func TestApplyDeltaResumesHash(t *testing.T) {
	files := []File{
		{Path: "a.conf", Data: []byte("a")},
		{Path: "b.conf", Data: []byte("b")},
		{Path: "nxmesh/maps.conf", Data: []byte("maps")},
		{Path: "z.conf", Data: []byte("z")},
	}
	base := sealT(t, files...)
	if err := base.Verify(); err != nil {
		t.Fatal(err)
	}
	other := sealT(t, File{Path: "1", Data: []byte("1")}, File{Path: "2", Data: []byte("2")},
		File{Path: "3", Data: []byte("3")}, File{Path: "4", Data: []byte("4")})
	if err := other.Verify(); err != nil {
		t.Fatal(err)
	}
	misled := &Bundle{Hash: base.Hash, Files: base.Files}
	misled.hashed.Store(&hashStates{files: base.Files, states: other.resumable()})
	with := func(edit func(fs []File) []File) *Bundle {
		return sealT(t, edit(slices.Clone(files))...)
	}
	tests := []struct {
		name   string
		to     *Bundle
		shared int // leading content files taken from the base
	}{
		{"first file edited", with(func(fs []File) []File { fs[0].Data = []byte("A"); return fs }), 0},
		{"after the generation file", with(func(fs []File) []File { fs[2].Data = []byte("MAPS"); return fs }), 2},
		{"last file edited", with(func(fs []File) []File { fs[3].Data = []byte("Z"); return fs }), 3},
		{"file added at the end", with(func(fs []File) []File { return append(fs, File{Path: "zz.conf", Data: []byte("zz")}) }), 4},
		{"file removed", with(func(fs []File) []File { return slices.Delete(fs, 1, 2) }), 1},
		{"secret flag set", with(func(fs []File) []File { fs[1].Secret = true; return fs }), 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ApplyDelta(base, Diff(base, tc.to), tc.to.Hash, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if n := sharedContent(base, got); n != tc.shared {
				t.Errorf("shares %d leading content files with the base, want %d", n, tc.shared)
			}
			full := &Bundle{Hash: got.Hash, Files: slices.Clone(got.Files)}
			if err := full.Verify(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.resumable(), full.resumable()) {
				t.Error("running states after the delta differ from a full Verify's")
			}
			_, err = ApplyDelta(misled, Diff(base, tc.to), tc.to.Hash, Limits{})
			if resumed := err != nil; resumed != (tc.shared > 0) {
				t.Errorf("from another bundle's states: err %v; want a mismatch only when files are shared (%d)", err, tc.shared)
			}
		})
	}
	swapped := &Bundle{Hash: base.Hash, Files: slices.Clone(base.Files)}
	swapped.hashed.Store(base.hashed.Load())
	if swapped.resumable() != nil {
		t.Error("a copy with other Files resumes from the original's states")
	}
	if base.resumable() == nil {
		t.Error("a verified bundle has no states to resume from")
	}
}

// TestVerifyConcurrently: Verify records the bundle's hash states, and
// goroutines may verify a bundle, and build from it, at the same time
// (the race detector of make test watches).
func TestVerifyConcurrently(t *testing.T) {
	b := codecBundle(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if err := b.Verify(); err != nil {
				t.Error(err)
			}
			if _, err := ApplyDelta(b, Diff(b, b), b.Hash, Limits{}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

// FuzzApplyDelta: no delta panics, and whatever applies is exactly the
// bundle its hash names (it verifies from scratch, though ApplyDelta
// resumed the hash from the base's states) and leaves the base untouched.
func FuzzApplyDelta(f *testing.F) {
	base := codecBundle(f)
	if err := base.Verify(); err != nil { // as an agent's live bundle: states kept
		f.Fatal(err)
	}
	to := sealT(f, File{Path: "nginx.conf", Data: []byte("events {}\n")}, File{Path: "vhosts/x.conf", Data: []byte("x")})
	f.Add(Diff(base, to), to.Hash)
	f.Add(Diff(base, base), base.Hash)
	f.Add([]byte(deltaMagic+"\x00\x01\x0bcerts/a.key"), "")
	f.Fuzz(func(t *testing.T, delta []byte, hash string) {
		before, _ := base.MarshalBinary()
		got, err := ApplyDelta(base, delta, hash, Limits{MaxFiles: 64, MaxFileSize: 1 << 16})
		if after, _ := base.MarshalBinary(); !bytes.Equal(before, after) {
			t.Fatal("ApplyDelta modified its base")
		}
		if err != nil {
			return
		}
		fresh := &Bundle{Hash: got.Hash, Files: slices.Clone(got.Files)}
		if err := fresh.Verify(); err != nil || got.Hash != hash {
			t.Fatalf("applied bundle %s does not verify as %s: %v", got.Hash, hash, err)
		}
	})
}

// BenchmarkApplyDelta: one agent's share of a push of a small change to a
// small bundle (seven files of 500 bytes, the last edited): decode, merge
// and verify. The base is verified, as an agent's live bundle is, so the
// hash resumes after the six files the change leaves alone.
func BenchmarkApplyDelta(b *testing.B) {
	files := []File{}
	for _, p := range []string{"nginx.conf", "nxmesh/log_format.conf", "nxmesh/maps.conf", "nxmesh/mime.types", "nxmesh/status.conf", "upstreams/app.conf", "vhosts/site.conf"} {
		files = append(files, File{Path: p, Data: make([]byte, 500)})
	}
	from := sealT(b, files...)
	if err := from.Verify(); err != nil {
		b.Fatal(err)
	}
	files[6].Data = append([]byte("x"), files[6].Data...)
	to := sealT(b, files...)
	delta := Diff(from, to)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ApplyDelta(from, delta, to.Hash, Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
