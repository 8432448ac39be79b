package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/schema"
)

func TestRender(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", goodYAML)
	bad := writeFile(t, dir, "bad.yaml", badYAML)

	rs, err := schema.Decode(good, []byte(goodYAML))
	if err != nil {
		t.Fatal(err)
	}
	want, err := nginx.Compile(rs, nginx.Options{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("managed", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "bundle")
		code, stdout, stderr := runCLI(t, "render", "-f", good, "--out", out)
		if code != 0 || stdout != want.Hash+"\n" || stderr != "" {
			t.Fatalf("exit %d, stdout %q (want the hash %s), stderr %q", code, stdout, want.Hash, stderr)
		}
		for _, f := range want.Files {
			got, err := os.ReadFile(filepath.Join(out, f.Path))
			if err != nil || string(got) != string(f.Data) {
				t.Errorf("%s: %v, content differs: %v", f.Path, err, string(got) != string(f.Data))
			}
		}

		code, _, stderr = runCLI(t, "render", "-f", good, "--out", out)
		if code != 2 || stderr != "nxmesh: --out "+out+" is not empty; pass --force to write into it\n" {
			t.Errorf("non-empty --out: exit %d, stderr %q", code, stderr)
		}
		if code, stdout, _ = runCLI(t, "render", "--force", "-f", good, "--out", out); code != 0 || stdout != want.Hash+"\n" {
			t.Errorf("--force: exit %d, stdout %q", code, stdout)
		}
	})
	t.Run("include", func(t *testing.T) {
		out := t.TempDir()
		code, stdout, stderr := runCLI(t, "render", "-f", good, "--out", out, "--mode", "include", "--include-root", "/var/lib/nxmesh/current")
		if code != 0 || len(strings.TrimSpace(stdout)) != 64 {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		conf, err := os.ReadFile(filepath.Join(out, nginx.IncludeFile))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(conf), `include "/var/lib/nxmesh/current/vhosts/web.conf";`) {
			t.Errorf("%s lacks the absolute include:\n%s", nginx.IncludeFile, conf)
		}
		if _, err := os.Stat(filepath.Join(out, nginx.MainFile)); err == nil {
			t.Errorf("include mode wrote %s", nginx.MainFile)
		}
	})
	t.Run("labels", func(t *testing.T) {
		sel := writeFile(t, t.TempDir(), "sel.yaml", strings.Replace(goodYAML, "  serverNames:", "  selector: {matchLabels: {region: eu-1}}\n  serverNames:", 1))
		for _, tc := range []struct {
			labels string
			vhost  bool
		}{{"region=eu-1,tier=edge", true}, {"region=us-1", false}} {
			out := t.TempDir()
			if code, _, stderr := runCLI(t, "render", "-f", sel, "--out", out, "--labels", tc.labels); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			_, err := os.Stat(filepath.Join(out, "vhosts", "web.conf"))
			if got := err == nil; got != tc.vhost {
				t.Errorf("--labels %s: vhost compiled %v, want %v", tc.labels, got, tc.vhost)
			}
		}
	})
	t.Run("invalid input", func(t *testing.T) {
		out := t.TempDir()
		code, stdout, stderr := runCLI(t, "render", "-f", bad, "--out", out)
		if code != 1 || stdout != "" || !strings.HasPrefix(stderr, bad+`: document 1: spec.servers[0].address: "10.0.0.1" has no port`) {
			t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		if entries, _ := os.ReadDir(out); len(entries) != 0 {
			t.Errorf("invalid input wrote %d entries", len(entries))
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"render", "-f", good},
			{"render", "-f", good, "--out", t.TempDir(), "--mode", "other"},
			{"render", "-f", good, "--out", t.TempDir(), "--include-root", "/x"},
			{"render", "-f", good, "--out", t.TempDir(), "--mode", "include"},
			{"render", "-f", good, "--out", t.TempDir(), "--status-listen", "0.0.0.0:1"},
		} {
			if code, _, stderr := runCLI(t, args...); code != 2 {
				t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr)
			}
		}
	})
}
