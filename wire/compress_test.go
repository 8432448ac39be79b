package wire

import (
	"bytes"
	"testing"
)

// BenchmarkDecompress: one small bundle's payload, as every agent of a push
// decodes it.
func BenchmarkDecompress(b *testing.B) {
	data := bytes.Repeat([]byte("server { listen 80; location / { proxy_pass http://up; } }\n"), 60)
	z, err := Compress(data)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decompress(z, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
