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
		out = appendFile(out, f)
	}
	return out, nil
}

// UnmarshalBundle decodes what MarshalBinary produced, refusing input over
// lim (zero fields: DefaultLimits), trailing bytes and unknown flags, and
// then Verifies the files against hash: a bundle from the network is only
// returned when it is exactly the bundle hash names. File data is copied,
// so the result does not alias data.
func UnmarshalBundle(data []byte, hash string, lim Limits) (*Bundle, error) {
	d, err := newDecoder(data, codecMagic, lim)
	if err != nil {
		return nil, err
	}
	files, err := d.files()
	if err != nil {
		return nil, err
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	b := &Bundle{Hash: hash, Files: files}
	if err := b.Verify(); err != nil {
		return nil, err
	}
	return b, nil
}

// appendFile appends f in the canonical encoding: the uvarint length and
// bytes of the path, a flags byte (1 = secret), the uvarint length and
// bytes of the data.
func appendFile(out []byte, f File) []byte {
	out = binary.AppendUvarint(out, uint64(len(f.Path)))
	out = append(out, f.Path...)
	flags := byte(0)
	if f.Secret {
		flags = 1
	}
	out = append(out, flags)
	out = binary.AppendUvarint(out, uint64(len(f.Data)))
	return append(out, f.Data...)
}

// decoder reads the canonical encodings (bundles and deltas) from the
// network: every length is checked against the bytes left and lim before
// anything is allocated.
type decoder struct {
	rest []byte
	lim  Limits
}

func newDecoder(data []byte, magic string, lim Limits) (*decoder, error) {
	if len(data) < len(magic) || string(data[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: missing %s header", ErrBadEncoding, magic)
	}
	return &decoder{rest: data[len(magic):], lim: lim.withDefaults()}, nil
}

// uv reads a uvarint that counts bytes still to come.
func (d *decoder) uv(what string) (int, error) {
	v, n := binary.Uvarint(d.rest)
	if n <= 0 {
		return 0, fmt.Errorf("%w: truncated %s", ErrBadEncoding, what)
	}
	d.rest = d.rest[n:]
	if v > uint64(len(d.rest)) {
		return 0, fmt.Errorf("%w: %s %d exceeds the remaining %d bytes", ErrBadEncoding, what, v, len(d.rest))
	}
	return int(v), nil
}

// count reads a uvarint count of items that take at least minSize bytes
// each, so a count cannot make us allocate more than the input justifies.
func (d *decoder) count(what string, minSize int) (int, error) {
	v, n := binary.Uvarint(d.rest)
	if n <= 0 {
		return 0, fmt.Errorf("%w: truncated %s", ErrBadEncoding, what)
	}
	d.rest = d.rest[n:]
	if v > uint64(d.lim.MaxFiles) {
		return 0, fmt.Errorf("%w: %d files, limit %d", ErrBadEncoding, v, d.lim.MaxFiles)
	}
	if v > uint64(len(d.rest)/minSize) {
		return 0, fmt.Errorf("%w: %d files in %d bytes", ErrBadEncoding, v, len(d.rest))
	}
	return int(v), nil
}

// path reads a length-prefixed path.
func (d *decoder) path(i int) (string, error) {
	plen, err := d.uv("path length")
	if err != nil {
		return "", err
	}
	if plen > d.lim.MaxPath {
		return "", fmt.Errorf("%w: file %d: path of %d bytes, limit %d", ErrBadEncoding, i, plen, d.lim.MaxPath)
	}
	p := string(d.rest[:plen])
	d.rest = d.rest[plen:]
	return p, nil
}

// files reads a count and that many files; their data is copied.
func (d *decoder) files() ([]File, error) {
	// Every file takes at least 3 bytes (path length, flags, data length).
	count, err := d.count("file count", 3)
	if err != nil {
		return nil, err
	}
	files := make([]File, 0, count)
	for i := range count {
		p, err := d.path(i)
		if err != nil {
			return nil, err
		}
		if len(d.rest) == 0 {
			return nil, fmt.Errorf("%w: file %q: truncated flags", ErrBadEncoding, p)
		}
		flags := d.rest[0]
		d.rest = d.rest[1:]
		if flags > 1 {
			return nil, fmt.Errorf("%w: file %q: unknown flags %#x", ErrBadEncoding, p, flags)
		}
		dlen, err := d.uv("data length")
		if err != nil {
			return nil, err
		}
		if dlen > d.lim.MaxFileSize {
			return nil, fmt.Errorf("%w: file %q: %d bytes, limit %d", ErrBadEncoding, p, dlen, d.lim.MaxFileSize)
		}
		files = append(files, File{Path: p, Secret: flags == 1, Data: append([]byte(nil), d.rest[:dlen]...)})
		d.rest = d.rest[dlen:]
	}
	return files, nil
}

// end fails unless everything was read.
func (d *decoder) end() error {
	if len(d.rest) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", ErrBadEncoding, len(d.rest))
	}
	return nil
}
