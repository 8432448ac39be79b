package wire

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sync"
)

// Compress gzips data for a Bundle or BundleData payload. A hub compresses a
// bundle once; the same bytes go to every relay and agent.
func Compress(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	return buf.Bytes(), nil
}

// gzipReaders keeps gzip readers for Decompress: a new one allocates its
// inflater's tables and 32 KiB window, about 45 KiB, which dwarfs a small
// bundle (a bench process decoding ten thousand of them at once made 450 MB
// of garbage per push).
var gzipReaders sync.Pool

// Decompress gunzips data, refusing with ErrTooLarge as soon as the output
// would exceed limit bytes, so a gzip bomb costs at most limit bytes of
// memory. Every decompression of peer data goes through here (DESIGN:
// every decompression has a size limit).
func Decompress(data []byte, limit int) ([]byte, error) {
	if limit < 0 {
		limit = 0
	}
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(data))
	} else {
		err = zr.Reset(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("decompress: %w", err)
	}
	defer gzipReaders.Put(zr)
	out, err := readBounded(zr, nil, limit)
	if err != nil {
		return nil, fmt.Errorf("decompress (limit %d bytes): %w", limit, err)
	}
	return out, nil
}

// DecodePayload undoes encoding (EncodingGzip or EncodingIdentity) with
// the same bound as Decompress: more than limit bytes is ErrTooLarge. An
// identity payload is returned as is, aliasing data.
func DecodePayload(encoding string, data []byte, limit int) ([]byte, error) {
	switch encoding {
	case EncodingGzip:
		return Decompress(data, limit)
	case EncodingIdentity:
		if len(data) > limit {
			return nil, fmt.Errorf("payload of %d bytes (limit %d): %w", len(data), limit, ErrTooLarge)
		}
		return data, nil
	}
	return nil, fmt.Errorf("unknown payload encoding %q", encoding)
}

// readBounded appends everything r yields to buf and returns it, or fails
// with ErrTooLarge once the total would exceed limit. It never grows buf
// beyond limit bytes of capacity.
func readBounded(r io.Reader, buf []byte, limit int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= limit {
				// Full: one more byte means too large, EOF means done.
				var one [1]byte
				n, err := io.ReadFull(r, one[:])
				switch {
				case n > 0:
					return nil, ErrTooLarge
				case err == io.EOF:
					return buf, nil
				default:
					return nil, err
				}
			}
			newCap := min(max(2*cap(buf), 512), limit)
			nb := make([]byte, len(buf), newCap)
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
