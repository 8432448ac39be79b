package nginx

import (
	"bytes"
	"errors"
	"strings"
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

// FuzzApplyDelta: no delta panics, and whatever applies is exactly the
// bundle its hash names (it verifies) and leaves the base untouched.
func FuzzApplyDelta(f *testing.F) {
	base := codecBundle(f)
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
		if err := got.Verify(); err != nil || got.Hash != hash {
			t.Fatalf("applied bundle %s does not verify as %s: %v", got.Hash, hash, err)
		}
	})
}

// BenchmarkApplyDelta: one agent's share of a push of a small change to a
// small bundle (seven files of 500 bytes, one edited): decode, merge and
// verify, most of it the SHA-256 of the whole bundle.
func BenchmarkApplyDelta(b *testing.B) {
	files := []File{}
	for _, p := range []string{"nginx.conf", "nxmesh/log_format.conf", "nxmesh/maps.conf", "nxmesh/mime.types", "nxmesh/status.conf", "upstreams/app.conf", "vhosts/site.conf"} {
		files = append(files, File{Path: p, Data: make([]byte, 500)})
	}
	from := sealT(b, files...)
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
