package schema

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// upstreamDoc and vhostDoc are valid documents the cases below build on.
const upstreamDoc = `apiVersion: nxmesh/v1
kind: Upstream
metadata:
  name: api
spec:
  servers:
    - address: 10.0.0.1:8080
`

const vhostDoc = `apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: web
spec:
  serverNames: [example.com]
  locations:
    - path: /
      upstream: api
`

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		input string
		want  string // the whole error; "" means success
		count int    // resources on success
	}{
		{
			name:  "upstream and virtual host",
			input: upstreamDoc + "---\n" + vhostDoc,
			count: 2,
		},
		{
			name:  "empty documents are skipped",
			input: "# nothing here\n---\n" + upstreamDoc + "---\n---\n" + vhostDoc + "---\n",
			count: 2,
		},
		{
			name:  "empty file",
			input: "",
		},
		{
			name: "json",
			input: `{"apiVersion": "nxmesh/v1", "kind": "Upstream", "metadata": {"name": "api"},
			  "spec": {"servers": [{"address": "unix:/run/api.sock", "maxFails": 0}]}}`,
			count: 1,
		},
		{
			name:  "the example from the brief",
			input: upstreamDoc + "---\n" + strings.Replace(vhostDoc, "path: /", "path: api", 1),
			want:  `vhosts.yaml: document 2: spec.locations[0].path: must start with "/"`,
		},
		{
			name:  "empty documents count when numbering",
			input: upstreamDoc + "---\n---\n# comment only\n---\n" + strings.Replace(vhostDoc, "path: /", "path: api", 1),
			want:  `vhosts.yaml: document 4: spec.locations[0].path: must start with "/"`,
		},
		{
			name:  "unknown top-level field",
			input: upstreamDoc + "status: {}\n",
			want:  `vhosts.yaml: document 1: status: unknown field`,
		},
		{
			name:  "unknown metadata field",
			input: strings.Replace(upstreamDoc, "  name: api\n", "  name: api\n  namespace: x\n", 1),
			want:  `vhosts.yaml: document 1: metadata.namespace: unknown field`,
		},
		{
			name:  "unknown spec field",
			input: upstreamDoc + "  bogus: 1\n",
			want:  `vhosts.yaml: document 1: spec.bogus: unknown field`,
		},
		{
			name:  "unknown field in a list item",
			input: vhostDoc + "      foo: bar\n",
			want:  `vhosts.yaml: document 1: spec.locations[0].foo: unknown field`,
		},
		{
			name:  "unknown field deep down",
			input: vhostDoc + "  tls:\n    certificate: c\n    hsts: {maxAge: 1, maxage: 2}\n",
			want:  `vhosts.yaml: document 1: spec.tls.hsts.maxage: unknown field`,
		},
		{
			name:  "field names are case-sensitive",
			input: upstreamDoc + "  Keepalive: 1\n",
			want:  `vhosts.yaml: document 1: spec.Keepalive: unknown field`,
		},
		{
			name:  "type mismatch names the path and the type",
			input: vhostDoc + "  listen:\n    - port: \"80\"\n",
			want:  `vhosts.yaml: document 1: spec.listen[0].port: expected integer, got string`,
		},
		{
			name:  "number for a string",
			input: strings.Replace(upstreamDoc, "name: api", "name: 123", 1),
			want:  `vhosts.yaml: document 1: metadata.name: expected string, got integer (quote the value)`,
		},
		{
			name:  "mapping for a list",
			input: vhostDoc + "  listen: {port: 80}\n",
			want:  `vhosts.yaml: document 1: spec.listen: expected sequence, got mapping`,
		},
		{
			name:  "hex integers are refused",
			input: vhostDoc + "  listen:\n    - port: 0x50\n",
			want:  `vhosts.yaml: document 1: spec.listen[0].port: "0x50" is not a decimal integer`,
		},
		{
			name:  "duplicate key",
			input: upstreamDoc + "  keepalive: 1\n  keepalive: 2\n",
			want:  `vhosts.yaml: document 1: spec.keepalive: duplicate key`,
		},
		{
			name:  "aliases are refused",
			input: "apiVersion: &v nxmesh/v1\nkind: Upstream\nmetadata: {name: api}\nspec:\n  servers:\n    - address: *v\n",
			want:  `vhosts.yaml: document 1: spec.servers[0].address: YAML aliases (*v) are not allowed; repeat the value instead`,
		},
		{
			name:  "merge keys are refused",
			input: "apiVersion: nxmesh/v1\nkind: Upstream\nmetadata: &m {name: api}\nspec:\n  <<: *m\n  servers: [{address: a:1}]\n",
			want:  `vhosts.yaml: document 1: spec: YAML merge keys (<<) are not allowed`,
		},
		{
			name:  "foreign tags are refused",
			input: strings.Replace(upstreamDoc, "name: api", "name: !!binary YXBp", 1),
			want:  `vhosts.yaml: document 1: metadata.name: YAML tag "!!binary" is not allowed`,
		},
		{
			name:  "wrong apiVersion",
			input: strings.Replace(upstreamDoc, "nxmesh/v1", "nxmesh/v2", 1),
			want:  `vhosts.yaml: document 1: apiVersion: must be "nxmesh/v1", got "nxmesh/v2"`,
		},
		{
			name:  "unknown kind",
			input: strings.Replace(upstreamDoc, "kind: Upstream", "kind: Gateway", 1),
			want:  `vhosts.yaml: document 1: kind: unknown kind "Gateway"; must be one of Certificate, Upstream, VirtualHost`,
		},
		{
			name:  "name required",
			input: strings.Replace(upstreamDoc, "  name: api\n", "  labels: {a: b}\n", 1),
			want:  `vhosts.yaml: document 1: metadata.name: required`,
		},
		{
			name:  "spec required",
			input: "apiVersion: nxmesh/v1\nkind: Upstream\nmetadata: {name: api}\n",
			want:  `vhosts.yaml: document 1: spec: required`,
		},
		{
			name:  "document not a mapping",
			input: "- a\n- b\n",
			want:  `vhosts.yaml: document 1: document must be a mapping with apiVersion, kind, metadata and spec, got sequence`,
		},
		{
			name:  "syntax error",
			input: upstreamDoc + "---\nkind: [\n",
			want:  `vhosts.yaml: document 2: yaml: line 9: did not find expected node content`,
		},
		{
			name: "errors of every document at once, without repeats",
			input: strings.Replace(upstreamDoc, "10.0.0.1:8080", "10.0.0.1", 1) + "---\n" +
				strings.Replace(vhostDoc, "  locations:", "  listen: [{port: x}]\n  locations:", 1),
			want: `vhosts.yaml: document 1: spec.servers[0].address: "10.0.0.1" has no port; use host:port, [ipv6]:port or unix:/absolute/path` + "\n" +
				`vhosts.yaml: document 2: spec.listen[0].port: expected integer, got string`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Decode("vhosts.yaml", []byte(tc.input))
			if tc.want != "" {
				if err == nil {
					t.Fatalf("Decode succeeded, want error %q", tc.want)
				}
				if got := err.Error(); got != tc.want {
					t.Fatalf("error\n got: %s\nwant: %s", got, tc.want)
				}
				var fe *FieldError
				if !errors.As(err, &fe) {
					t.Fatalf("errors.As(*FieldError) failed on %T", err)
				}
				if rs != nil {
					t.Errorf("Decode returned %d resources with an error", len(rs))
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(rs) != tc.count {
				t.Fatalf("got %d resources, want %d", len(rs), tc.count)
			}
		})
	}
}

func TestDecodeSource(t *testing.T) {
	rs, err := Decode("a.yaml", []byte("---\n"+upstreamDoc+"---\n---\n"+vhostDoc))
	if err != nil {
		t.Fatal(err)
	}
	want := []Source{{"a.yaml", 1}, {"a.yaml", 3}}
	for i, r := range rs {
		if r.Source != want[i] {
			t.Errorf("resource %d: Source = %+v, want %+v", i, r.Source, want[i])
		}
	}
	if _, ok := rs[1].Spec.(*VirtualHostSpec); !ok {
		t.Errorf("spec of a VirtualHost is %T", rs[1].Spec)
	}
}

func TestDecodeLimits(t *testing.T) {
	big := make([]byte, MaxFileSize+1)
	_, err := Decode("big.yaml", big)
	if want := "big.yaml: file is 8388609 bytes; at most 8388608 are accepted"; err == nil || err.Error() != want {
		t.Errorf("oversized file: got %v, want %s", err, want)
	}

	// Many bad fields: the error list stops at 50 and says so.
	var b strings.Builder
	b.WriteString(upstreamDoc)
	for i := range 60 {
		b.WriteString("  x" + strings.Repeat("y", i) + ": 1\n")
	}
	_, err = Decode("many.yaml", []byte(b.String()))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("got %T, want Errors", err)
	}
	if len(es) != maxErrors+1 || es[maxErrors].Message != "10 more errors not shown" {
		t.Errorf("got %d errors, last %q", len(es), es[len(es)-1])
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		name string
		err  FieldError
		want string
	}{
		{"all parts", FieldError{"f.yaml", 2, "spec.x", "bad"}, "f.yaml: document 2: spec.x: bad"},
		{"no file", FieldError{"", 2, "spec.x", "bad"}, "document 2: spec.x: bad"},
		{"no document", FieldError{"f.yaml", 0, "spec.x", "bad"}, "f.yaml: spec.x: bad"},
		{"no field", FieldError{"f.yaml", 1, "", "bad"}, "f.yaml: document 1: bad"},
		{"message only", FieldError{Message: "bad"}, "bad"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.err.Error(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestJSONRoundTrip(t *testing.T) {
	certPEM, keyPEM := testCert(t)
	rs, err := Decode("shop.yaml", readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	rs = append(rs, Resource{
		APIVersion: APIVersion, Kind: KindCertificate, Metadata: Metadata{Name: "generated"},
		Spec: &CertificateSpec{Certificate: certPEM, PrivateKey: keyPEM},
	})
	for _, r := range rs {
		t.Run(r.Metadata.Name, func(t *testing.T) {
			data, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			var back Resource
			if err := json.Unmarshal(data, &back); err != nil {
				t.Fatalf("unmarshal %s: %v", data, err)
			}
			r.Source = Source{}
			if !reflect.DeepEqual(back, r) {
				t.Errorf("round trip changed the resource\n got: %#v\nwant: %#v", back, r)
			}
			if err := back.Validate(); err != nil {
				t.Errorf("round-tripped resource is invalid: %v", err)
			}
		})
	}
}

func TestUnmarshalJSONStrict(t *testing.T) {
	tests := []struct {
		name, input, want string
	}{
		{"unknown field", `{"apiVersion":"nxmesh/v1","kind":"Upstream","metadata":{"name":"a"},"spec":{"servers":[],"x":1}}`, "spec.x: unknown field"},
		{"unknown kind", `{"apiVersion":"nxmesh/v1","kind":"Nope","metadata":{"name":"a"},"spec":{}}`, `kind: unknown kind "Nope"; must be one of Certificate, Upstream, VirtualHost`},
		{"not JSON", "kind: Upstream", "invalid JSON"},
		{"duplicate key", `{"kind":"Upstream","kind":"Upstream"}`, "kind: duplicate key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r Resource
			err := r.UnmarshalJSON([]byte(tc.input))
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v, want %s", err, tc.want)
			}
		})
	}
}

func TestDecodeSpec(t *testing.T) {
	s, err := DecodeSpec(KindUpstream, []byte(`{"servers":[{"address":"a:1","weight":2}],"keepalive":4}`))
	if err != nil {
		t.Fatal(err)
	}
	want := &UpstreamSpec{Servers: []UpstreamServer{{Address: "a:1", Weight: 2}}, Keepalive: 4}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %#v, want %#v", s, want)
	}
	_, err = DecodeSpec(KindVirtualHost, []byte(`{"serverNames":["a"],"locations":[{"path":"/","retrun":{}}]}`))
	if want := "spec.locations[0].retrun: unknown field"; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	_, err = DecodeSpec("Nope", []byte(`{}`))
	if want := `kind: unknown kind "Nope"; must be one of Certificate, Upstream, VirtualHost`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestExamples(t *testing.T) {
	files, err := filepath.Glob("testdata/examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := Decode(filepath.Base(f), data)
			if err != nil {
				t.Fatal(err)
			}
			if err := ValidateSet(filepath.Base(f), rs); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func readExample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/examples/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return data
}
