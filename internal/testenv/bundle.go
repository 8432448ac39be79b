package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nxmesh/nxmesh/nginx"
)

// StartBundle starts nginx on a compiled managed-mode bundle, laid out as
// the agent lays it out: the bundle in PREFIX/current, logs/ and tmp/ in
// PREFIX, nginx -p PREFIX -c PREFIX/current/nginx.conf. It waits until
// nginx accepts connections on waitPort (0: do not wait) and stops nginx
// when the test ends. When the test runs as root the bundle should have
// been compiled with Options.User "root", or workers cannot read the temp
// directories.
func StartBundle(t testing.TB, b *nginx.Bundle, waitPort int) *Nginx {
	t.Helper()
	bin := NginxBinary(t)
	prefix := t.TempDir()
	tree := filepath.Join(prefix, "current")
	if err := b.Write(tree); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(prefix, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(tree, nginx.MainFile)
	if err := bin.Test(context.Background(), prefix, conf); err != nil {
		t.Fatalf("test bundle %s: %v", b.Hash, err)
	}
	return start(t, bin, prefix, conf, filepath.Join(prefix, "logs", "error.log"), waitPort)
}
