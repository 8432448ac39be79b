package nginx

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// codecMagic starts every encoded bundle; the trailing digit is the format
// version.
const codecMagic = "NXB1"

// Limits bound what UnmarshalBundle accepts from the network. A zero field
// takes its default from DefaultLimits.
type Limits struct {
	// MaxFiles is the most files a bundle may hold.
	MaxFiles int
	// MaxFileSize is the largest file, in bytes.
	MaxFileSize int
	// MaxPath is the longest file path, in bytes.
	MaxPath int
}

// DefaultLimits are generous for real bundles (tens of thousands of vhosts)
// and still bound memory; the total is bounded by the caller's decompression
// limit, since UnmarshalBundle never allocates more than len(data).
var DefaultLimits = Limits{MaxFiles: 100_000, MaxFileSize: 16 << 20, MaxPath: 1024}

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultLimits.MaxFiles
	}
	if l.MaxFileSize <= 0 {
		l.MaxFileSize = DefaultLimits.MaxFileSize
	}
	if l.MaxPath <= 0 {
		l.MaxPath = DefaultLimits.MaxPath
	}
	return l
}

// ErrBadEncoding is wrapped by every UnmarshalBundle error about the shape of
// the input (as opposed to a hash mismatch, which Verify reports).
var ErrBadEncoding = errors.New("bad bundle encoding")

// MarshalBinary encodes the bundle canonically: "NXB1", the uvarint file
// count, then for each file in order the uvarint length and bytes of the
// path, a flags byte (1 = secret) and the uvarint length and bytes of the
// data. The same bundle always encodes to the same bytes.
func (b *Bundle) MarshalBinary() ([]byte, error) {
	size := len(codecMagic) + binary.MaxVarintLen64
	for _, f := range b.Files {
		size += 2*binary.MaxVarintLen64 + 1 + len(f.Path) + len(f.Data)
	}
	out := make([]byte, 0, size)
	out = append(out, codecMagic...)
	out = binary.AppendUvarint(out, uint64(len(b.Files)))
	for _, f := range b.Files {
		out = binary.AppendUvarint(out, uint64(len(f.Path)))
		out = append(out, f.Path...)
		flags := byte(0)
		if f.Secret {
			flags = 1
		}
		out = append(out, flags)
		out = binary.AppendUvarint(out, uint64(len(f.Data)))
		out = append(out, f.Data...)
	}
	return out, nil
}

// UnmarshalBundle decodes what MarshalBinary produced, refusing input over
// lim (zero fields: DefaultLimits), trailing bytes and unknown flags, and
// then Verifies the files against hash: a bundle from the network is only
// returned when it is exactly the bundle hash names. File data is copied,
// so the result does not alias data.
func UnmarshalBundle(data []byte, hash string, lim Limits) (*Bundle, error) {
	lim = lim.withDefaults()
	if len(data) < len(codecMagic) || string(data[:len(codecMagic)]) != codecMagic {
		return nil, fmt.Errorf("%w: missing %s header", ErrBadEncoding, codecMagic)
	}
	rest := data[len(codecMagic):]
	uv := func(what string) (int, error) {
		v, n := binary.Uvarint(rest)
		if n <= 0 {
			return 0, fmt.Errorf("%w: truncated %s", ErrBadEncoding, what)
		}
		rest = rest[n:]
		if v > uint64(len(rest)) && what != "file count" {
			return 0, fmt.Errorf("%w: %s %d exceeds the remaining %d bytes", ErrBadEncoding, what, v, len(rest))
		}
		if v > 1<<31 {
			return 0, fmt.Errorf("%w: %s %d too large", ErrBadEncoding, what, v)
		}
		return int(v), nil
	}
	count, err := uv("file count")
	if err != nil {
		return nil, err
	}
	if count > lim.MaxFiles {
		return nil, fmt.Errorf("%w: %d files, limit %d", ErrBadEncoding, count, lim.MaxFiles)
	}
	// Every file takes at least 3 bytes, so count cannot make us allocate
	// more than the input justifies.
	if count > len(rest)/3 {
		return nil, fmt.Errorf("%w: %d files in %d bytes", ErrBadEncoding, count, len(rest))
	}
	files := make([]File, 0, count)
	for i := range count {
		plen, err := uv("path length")
		if err != nil {
			return nil, err
		}
		if plen > lim.MaxPath {
			return nil, fmt.Errorf("%w: file %d: path of %d bytes, limit %d", ErrBadEncoding, i, plen, lim.MaxPath)
		}
		p := string(rest[:plen])
		rest = rest[plen:]
		if len(rest) == 0 {
			return nil, fmt.Errorf("%w: file %q: truncated flags", ErrBadEncoding, p)
		}
		flags := rest[0]
		rest = rest[1:]
		if flags > 1 {
			return nil, fmt.Errorf("%w: file %q: unknown flags %#x", ErrBadEncoding, p, flags)
		}
		dlen, err := uv("data length")
		if err != nil {
			return nil, err
		}
		if dlen > lim.MaxFileSize {
			return nil, fmt.Errorf("%w: file %q: %d bytes, limit %d", ErrBadEncoding, p, dlen, lim.MaxFileSize)
		}
		files = append(files, File{Path: p, Secret: flags == 1, Data: append([]byte(nil), rest[:dlen]...)})
		rest = rest[dlen:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadEncoding, len(rest))
	}
	b := &Bundle{Hash: hash, Files: files}
	if err := b.Verify(); err != nil {
		return nil, err
	}
	return b, nil
}
