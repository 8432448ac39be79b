package nginx

import (
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// loadSet decodes and validates a YAML file of testdata.
func loadSet(t testing.TB, file string) []schema.Resource {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := schema.Decode(file, data)
	if err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
	if err := schema.ValidateSet(file, rs); err != nil {
		t.Fatalf("validate %s: %v", file, err)
	}
	return rs
}

var goldenLabels = map[string]string{"region": "eu-1"}

func goldenOptions(mode Mode) Options {
	o := Options{Labels: goldenLabels, Mode: mode}
	if mode == Include {
		o.IncludeRoot = "/var/lib/nxmesh/current"
	}
	return o
}

// TestGolden compiles testdata/golden.yaml in both modes and compares every
// file with testdata/golden/MODE/PATH (go test -run TestGolden -update
// rewrites them).
func TestGolden(t *testing.T) {
	set := loadSet(t, "golden.yaml")
	for _, mode := range []Mode{Managed, Include} {
		t.Run(mode.String(), func(t *testing.T) {
			opts := goldenOptions(mode)
			b, err := Compile(set, opts)
			if err != nil {
				t.Fatal(err)
			}
			assertSafe(t, b, opts.IncludeRoot)
			dir := filepath.Join("testdata", "golden", mode.String())
			if *update {
				if err := os.RemoveAll(dir); err != nil {
					t.Fatal(err)
				}
				for _, f := range b.Files {
					p := filepath.Join(dir, filepath.FromSlash(f.Path))
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, f.Data, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			var onDisk []string
			err = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				rel, _ := filepath.Rel(dir, p)
				onDisk = append(onDisk, filepath.ToSlash(rel))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, f := range b.Files {
				paths = append(paths, f.Path)
				want, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f.Path)))
				if err != nil {
					t.Errorf("%s: %v (run go test ./nginx -run TestGolden -update)", f.Path, err)
					continue
				}
				if string(want) != string(f.Data) {
					t.Errorf("%s differs from the golden file (run with -update and review the diff):\n--- got\n%s\n--- want\n%s", f.Path, f.Data, want)
				}
			}
			slices.Sort(onDisk)
			if !slices.Equal(paths, onDisk) {
				t.Errorf("bundle files %v, golden files %v", paths, onDisk)
			}
		})
	}
}

func TestCompileSelectsByLabels(t *testing.T) {
	set := loadSet(t, "golden.yaml")
	tests := []struct {
		name   string
		labels map[string]string
		want   []string // vhosts and upstreams present
		absent []string
	}{
		{name: "eu", labels: map[string]string{"region": "eu-1"},
			want:   []string{"vhosts/shop.conf", "vhosts/blog.conf", "upstreams/shop-api.conf", "certs/shop-tls.key"},
			absent: []string{"vhosts/us-only.conf", "upstreams/unused.conf"}},
		{name: "us", labels: map[string]string{"region": "us-1"},
			want: []string{"vhosts/us-only.conf", "upstreams/unused.conf"}},
		{name: "no labels", labels: nil,
			want: []string{"vhosts/shop.conf"}, absent: []string{"vhosts/us-only.conf", "upstreams/unused.conf"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Compile(set, Options{Labels: tc.labels})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.want {
				if b.File(p) == nil {
					t.Errorf("%s missing", p)
				}
			}
			for _, p := range tc.absent {
				if b.File(p) != nil {
					t.Errorf("%s present", p)
				}
			}
			if f := b.File("certs/shop-tls.key"); f != nil && !f.Secret {
				t.Error("private key file not marked secret")
			}
		})
	}
}

// TestCompileDeterministic: the same set in any order gives the same hash.
func TestCompileDeterministic(t *testing.T) {
	set := loadSet(t, "golden.yaml")
	for _, mode := range []Mode{Managed, Include} {
		first, err := Compile(set, goldenOptions(mode))
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 20 {
			shuffled := slices.Clone(set)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			b, err := Compile(shuffled, goldenOptions(mode))
			if err != nil {
				t.Fatal(err)
			}
			if b.Hash != first.Hash {
				t.Fatalf("%s: compile %d of a shuffled set: hash %s, first %s", mode, i, b.Hash, first.Hash)
			}
		}
		if err := first.Verify(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCompileRefuses: values the compiler cannot write safely, or that
// break the agent's options, give an error naming resource and field.
func TestCompileRefuses(t *testing.T) {
	vhost := func(loc schema.Location) []schema.Resource {
		return []schema.Resource{{
			APIVersion: schema.APIVersion, Kind: schema.KindVirtualHost, Metadata: schema.Metadata{Name: "web"},
			Spec: &schema.VirtualHostSpec{ServerNames: []string{"example.com"}, Locations: []schema.Location{loc}},
		}}
	}
	tests := []struct {
		name string
		set  []schema.Resource
		opts Options
		want string
	}{
		{name: "static root outside the allowed bases",
			set:  vhost(schema.Location{Path: "/", Static: &schema.Static{Root: "/etc"}}),
			want: `compile VirtualHost "web": spec.locations[0].static.root: "/etc" is outside the allowed static roots /var/www, /srv/www`},
		{name: "static root with a custom base",
			set:  vhost(schema.Location{Path: "/", Static: &schema.Static{Root: "/var/www2"}}),
			opts: Options{StaticRoots: []string{"/data"}},
			want: `compile VirtualHost "web": spec.locations[0].static.root: "/var/www2" is outside the allowed static roots /data`},
		{name: "newline in a body is fine but a NUL is not",
			set:  vhost(schema.Location{Path: "/", Return: &schema.Return{Status: 200, Body: "a\nb\x00"}}),
			want: `compile VirtualHost "web": spec.locations[0].return.body: "a\nb\x00" contains a control character or invalid UTF-8`},
		{name: "path that ends the directive",
			set:  vhost(schema.Location{Path: "/a; load_module x", Return: &schema.Return{Status: 204}}),
			want: `compile VirtualHost "web": spec.locations[0].path: "/a; load_module x" is not a path of RFC 3986 characters starting with "/"`},
		{name: "variable in a header value",
			set: vhost(schema.Location{Path: "/", Return: &schema.Return{Status: 204},
				Headers: &schema.Headers{Response: &schema.HeaderRules{Add: map[string]string{"X-A": "$ssl_client_cert"}}}}),
			want: `compile VirtualHost "web": spec.locations[0].headers.response.add.X-A: "$ssl_client_cert" uses "$ssl_client_cert", which is not an allowed variable`},
		{name: "missing upstream",
			set:  vhost(schema.Location{Path: "/", Upstream: "api"}),
			want: `compile VirtualHost "web": spec.locations[0].upstream: no Upstream named "api"`},
		{name: "status listen not on loopback",
			set:  vhost(schema.Location{Path: "/", Return: &schema.Return{Status: 204}}),
			opts: Options{StatusListen: "0.0.0.0:8765"},
			want: `compile: options.StatusListen: "0.0.0.0:8765" must be a loopback address and port, such as 127.0.0.1:8765`},
		{name: "include mode needs a root",
			set:  vhost(schema.Location{Path: "/", Return: &schema.Return{Status: 204}}),
			opts: Options{Mode: Include},
			want: `compile: options.IncludeRoot: is required in include mode`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.set, tc.opts)
			if err == nil {
				t.Fatal("compiled")
			}
			if err.Error() != tc.want {
				t.Errorf("error\n %s\nwant\n %s", err, tc.want)
			}
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Errorf("error is %T, not *CompileError", err)
			}
		})
	}
}

// TestCheckGolden runs nginx -t (unprivileged when root) on the managed
// golden bundle, and on the include bundle inside a main file of our own.
func TestCheckGolden(t *testing.T) {
	bin := nginxBinary(t)
	set := loadSet(t, "golden.yaml")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	b, err := Compile(set, goldenOptions(Managed))
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, bin, b); err != nil {
		t.Fatalf("managed bundle: %v", err)
	}

	root := t.TempDir()
	inc, err := Compile(set, Options{Labels: goldenLabels, Mode: Include, IncludeRoot: filepath.Join(root, "current")})
	if err != nil {
		t.Fatal(err)
	}
	assertSafe(t, inc, filepath.Join(root, "current"))
	if err := inc.Write(filepath.Join(root, "current")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	main := "pid nginx.pid;\nerror_log logs/error.log;\nevents {}\nhttp {\n" +
		"    client_body_temp_path tmp/body;\n    proxy_temp_path tmp/proxy;\n    fastcgi_temp_path tmp/fastcgi;\n" +
		"    uwsgi_temp_path tmp/uwsgi;\n    scgi_temp_path tmp/scgi;\n" +
		"    include " + filepath.Join(root, "current", IncludeFile) + ";\n}\n"
	if err := os.WriteFile(filepath.Join(root, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := bin.Test(ctx, root, filepath.Join(root, "nginx.conf")); err != nil {
		t.Fatalf("include bundle: %v", err)
	}
}

// TestCheckNamesResource: a bundle nginx refuses gives a *CheckError that
// names the VirtualHost whose file nginx pointed at, with nginx's message.
func TestCheckNamesResource(t *testing.T) {
	bin := nginxBinary(t)
	// Two default servers on one port: valid for the schema, refused by
	// nginx; the second file by name is the one nginx complains about.
	var set []schema.Resource
	for _, name := range []string{"alpha", "beta"} {
		set = append(set, schema.Resource{
			APIVersion: schema.APIVersion, Kind: schema.KindVirtualHost, Metadata: schema.Metadata{Name: name},
			Spec: &schema.VirtualHostSpec{
				ServerNames: []string{name + ".example.com"},
				Listen:      []schema.Listen{{Port: 8080, DefaultServer: true}},
				Locations:   []schema.Location{{Path: "/", Return: &schema.Return{Status: 204}}},
			},
		})
	}
	if err := schema.ValidateSet("test", set); err != nil {
		t.Fatal(err)
	}
	b, err := Compile(set, Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = Check(context.Background(), bin, b)
	var ce *CheckError
	if !errors.As(err, &ce) {
		t.Fatalf("Check = %v, want a *CheckError", err)
	}
	var te *TestError
	if !errors.As(err, &te) {
		t.Fatal("CheckError does not wrap a *TestError")
	}
	want := `nginx -t: VirtualHost "beta" (vhosts/beta.conf:4): a duplicate default server for 0.0.0.0:8080`
	if err.Error() != want {
		t.Errorf("error\n %s\nwant\n %s", err, want)
	}
	if strings.Contains(te.Output, os.TempDir()+"/nxmesh-check-") {
		t.Errorf("output still names the throwaway directory: %s", te.Output)
	}
}

func TestResourceForFile(t *testing.T) {
	tests := []struct {
		path, kind, name string
		ok               bool
	}{
		{"vhosts/shop.conf", "VirtualHost", "shop", true},
		{"upstreams/api-1.conf", "Upstream", "api-1", true},
		{"certs/shop-tls.crt", "Certificate", "shop-tls", true},
		{"certs/shop-tls.key", "Certificate", "shop-tls", true},
		{"nginx.conf", "", "", false},
		{"nxmesh/status.conf", "", "", false},
		{"vhosts/a/b.conf", "", "", false},
		{"vhosts/Bad_Name.conf", "", "", false},
		{"certs/x.conf", "", "", false},
	}
	for _, tc := range tests {
		kind, name, ok := ResourceForFile(tc.path)
		if kind != tc.kind || name != tc.name || ok != tc.ok {
			t.Errorf("ResourceForFile(%q) = %q, %q, %v; want %q, %q, %v", tc.path, kind, name, ok, tc.kind, tc.name, tc.ok)
		}
	}
}

// nginxBinary finds nginx; the nginx package cannot import internal/testenv
// (which imports it), so this mirrors testenv.NginxBinary.
func nginxBinary(t testing.TB) *Binary {
	t.Helper()
	b, err := FindBinary()
	if err != nil {
		t.Fatalf("%v (run `make test-deps` as root to install it)", err)
	}
	return b
}
