package nginx

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func codecBundle(t testing.TB) *Bundle {
	t.Helper()
	b, err := Seal([]File{
		{Path: "nginx.conf", Data: []byte("events {}\nhttp {}\n")},
		{Path: "certs/a.key", Data: []byte("KEY"), Secret: true},
		{Path: "vhosts/empty.conf"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBundleCodecRoundTrip(t *testing.T) {
	b := codecBundle(t)
	data, err := b.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := b.MarshalBinary()
	if !bytes.Equal(data, again) {
		t.Fatal("encoding is not deterministic")
	}
	got, err := UnmarshalBundle(data, b.Hash, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash != b.Hash || len(got.Files) != len(b.Files) {
		t.Fatalf("got %d files hash %s, want %d files hash %s", len(got.Files), got.Hash, len(b.Files), b.Hash)
	}
	for i := range b.Files {
		if got.Files[i].Path != b.Files[i].Path || got.Files[i].Secret != b.Files[i].Secret || !bytes.Equal(got.Files[i].Data, b.Files[i].Data) {
			t.Errorf("file %d: got %+v, want %+v", i, got.Files[i], b.Files[i])
		}
	}
}

func TestUnmarshalBundleRefuses(t *testing.T) {
	b := codecBundle(t)
	good, _ := b.MarshalBinary()
	tests := []struct {
		name string
		data []byte
		hash string
		lim  Limits
		want string
	}{
		{"wrong hash", good, strings.Repeat("0", 64), Limits{}, "hash mismatch"},
		{"no magic", []byte("XXXX"), b.Hash, Limits{}, "header"},
		{"empty", nil, b.Hash, Limits{}, "header"},
		{"truncated", good[:len(good)-2], b.Hash, Limits{}, "truncated"},
		{"data cut", good[:len(good)-20], b.Hash, Limits{}, ""},
		{"trailing", append(append([]byte(nil), good...), 0), b.Hash, Limits{}, "trailing"},
		{"too many files", good, b.Hash, Limits{MaxFiles: 2}, "limit 2"},
		{"file too large", good, b.Hash, Limits{MaxFileSize: 4}, "limit 4"},
		{"path too long", good, b.Hash, Limits{MaxPath: 5}, "limit 5"},
		{"huge count", append([]byte("NXB1"), 0xff, 0xff, 0xff, 0x0f), b.Hash, Limits{MaxFiles: 1 << 30}, "files in"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := UnmarshalBundle(tc.data, tc.hash, tc.lim)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if tc.name != "wrong hash" && !errors.Is(err, ErrBadEncoding) {
				t.Errorf("err = %v, want ErrBadEncoding", err)
			}
		})
	}
}

// FuzzUnmarshalBundle: no input panics, and whatever decodes re-encodes to
// exactly the input (the encoding is canonical) and verifies.
func FuzzUnmarshalBundle(f *testing.F) {
	b := codecBundle(f)
	good, _ := b.MarshalBinary()
	f.Add(good, b.Hash)
	f.Add([]byte("NXB1\x00"), b.Hash)
	f.Add([]byte("NXB1\x01\x01a\x02\x00"), "")
	f.Fuzz(func(t *testing.T, data []byte, hash string) {
		got, err := UnmarshalBundle(data, hash, Limits{MaxFiles: 64, MaxFileSize: 1 << 16})
		if err != nil {
			return
		}
		if err := got.Verify(); err != nil {
			t.Fatalf("decoded bundle does not verify: %v", err)
		}
		again, err := got.MarshalBinary()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs from the input (err %v)", err)
		}
	})
}
