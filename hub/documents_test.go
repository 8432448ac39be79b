package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/schema"
)

const upstreamYAML = `apiVersion: nxmesh/v1
kind: Upstream
metadata:
  name: api
spec:
  servers:
    - address: 10.0.0.1:8080
`

const vhostYAML = `apiVersion: nxmesh/v1
kind: VirtualHost
metadata:
  name: web
  labels: {env: prod}
spec:
  serverNames: [example.com]
  locations:
    - path: /
      upstream: api
`

func TestPrepareDocuments(t *testing.T) {
	withMeta := func(doc, meta string) string {
		return strings.Replace(doc, "metadata:\n", "metadata:\n"+meta, 1)
	}
	for _, tc := range []struct {
		name     string
		in       string
		count    int     // resources decoded
		versions []int64 // per resource
		field    string  // of the first error; "" = success
	}{
		{"plain YAML unchanged", upstreamYAML + "---\n" + vhostYAML, 2, []int64{0, 0}, ""},
		{"version and times", withMeta(upstreamYAML, "  version: 7\n  createdAt: 2025-01-01T00:00:00Z\n  updatedAt: \"x\"\n"), 1, []int64{7}, ""},
		{"null version", withMeta(upstreamYAML, "  version: null\n"), 1, []int64{0}, ""},
		{"second document", upstreamYAML + "---\n" + withMeta(vhostYAML, "  version: 2\n"), 2, []int64{0, 2}, ""},
		{"JSON array", `[` + jsonDoc(t, upstreamYAML, 3) + `,` + jsonDoc(t, vhostYAML, 0) + `]`, 2, []int64{3, 0}, ""},
		{"empty documents still count", "---\n---\n" + withMeta(upstreamYAML, "  version: 4\n"), 1, []int64{4}, ""},
		{"version as a string", withMeta(upstreamYAML, "  version: \"7\"\n"), 0, nil, "metadata.version"},
		{"negative version", withMeta(upstreamYAML, "  version: -1\n"), 0, nil, "metadata.version"},
		{"version twice", withMeta(upstreamYAML, "  version: 1\n  version: 2\n"), 0, nil, "metadata.version"},
		{"other unknown metadata still refused", withMeta(upstreamYAML, "  version: 1\n  owner: me\n"), 0, nil, "metadata.owner"},
		{"alias still refused after rewriting", withMeta(upstreamYAML, "  version: 1\n  labels: {a: &x b, c: *x}\n"), 0, nil, "metadata.labels.c"},
		{"array element not a mapping", `[1]`, 0, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, byDoc, err := PrepareDocuments([]byte(tc.in))
			if err == nil {
				var rs []schema.Resource
				rs, err = schema.Decode("", out)
				if err == nil {
					if len(rs) != tc.count {
						t.Fatalf("%d resources, want %d", len(rs), tc.count)
					}
					for i, r := range rs {
						if got := byDoc[r.Source.Document-1]; got != tc.versions[i] {
							t.Errorf("resource %d: version %d, want %d", i, got, tc.versions[i])
						}
					}
					if tc.field != "" {
						t.Fatalf("accepted; want an error on %s", tc.field)
					}
					return
				}
			}
			var fe *schema.FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) carries no field error", err, err)
			}
			if tc.count != 0 || fe.Field != tc.field {
				t.Fatalf("error on %q: %v; want field %q", fe.Field, err, tc.field)
			}
		})
	}
}

// jsonDoc returns the YAML document as JSON, with metadata.version set
// unless version is 0.
func jsonDoc(t testing.TB, doc string, version int64) string {
	t.Helper()
	rs, err := schema.Decode("", []byte(doc))
	if err != nil || len(rs) != 1 {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return string(withVersion(t, rs[0], version))
}

// withVersion returns r as the API shows it: JSON with metadata.version
// and the timestamps.
func withVersion(t testing.TB, r schema.Resource, version int64) []byte {
	var m map[string]any
	b, _ := json.Marshal(r)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if version != 0 {
		meta := m["metadata"].(map[string]any)
		meta["version"] = version
		meta["createdAt"] = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
		meta["updatedAt"] = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	}
	b, _ = json.Marshal(m)
	return b
}

// FuzzPrepareDocuments checks that PrepareDocuments never panics, leaves a
// body that schema.Decode accepts as it is, and that the resources of any
// accepted body, shown as the API shows them (a JSON array with versions
// and timestamps), decode back to the same resources with their versions.
func FuzzPrepareDocuments(f *testing.F) {
	f.Add([]byte(upstreamYAML + "---\n" + vhostYAML))
	f.Add([]byte("---\n---\n" + vhostYAML))
	f.Add([]byte(`[{"apiVersion":"nxmesh/v1","kind":"Upstream","metadata":{"name":"a","version":2},"spec":{"servers":[{"address":"[::1]:80"}]}}]`))
	f.Add([]byte("metadata: {version: 0x10, createdAt: &a x, updatedAt: *a}\n"))
	f.Add([]byte("[[], {}, null, 1, \"metadata\"]"))
	// Values that YAML would read as another type unless quoted, which a
	// rewrite must keep quoted.
	for _, v := range []string{"yes", "no", "on", "null", "~", "0x10", "0o7", "1e3", ".inf", "2025-01-01", "'", "\"", "#", ": x", "- x", "\u2028", "\ufeff", "\x00"} {
		q, _ := json.Marshal(v)
		f.Add([]byte(strings.Replace(vhostYAML, "upstream: api", "return: {status: 200, body: "+string(q)+"}", 1)))
		f.Add([]byte(strings.Replace(vhostYAML, "path: /", "path: "+string(q), 1)))
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte(strings.Repeat("[", 20000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		slow := time.AfterFunc(10*time.Second, func() { panic("PrepareDocuments took more than 10s") })
		defer slow.Stop()
		out, versions, err := PrepareDocuments(data)
		if err != nil {
			var es schema.Errors
			var ae *APIError
			if !errors.As(err, &es) && !errors.As(err, &ae) {
				t.Fatalf("error is %T, want schema.Errors or *APIError: %v", err, err)
			}
			return
		}
		rs, err := schema.Decode("", data)
		if err != nil {
			schema.Decode("", out) // must not panic either
			return
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("a body Decode accepts was rewritten:\n%q\nto\n%q", data, out)
		}
		for _, v := range versions {
			if v != 0 {
				t.Fatalf("versions %v from a body without any", versions)
			}
		}
		if len(rs) == 0 {
			return
		}
		var arr bytes.Buffer
		arr.WriteByte('[')
		for i, r := range rs {
			if i > 0 {
				arr.WriteByte(',')
			}
			arr.Write(withVersion(t, r, int64(i+1)))
		}
		arr.WriteByte(']')
		out, versions, err = PrepareDocuments(arr.Bytes())
		if err != nil {
			t.Fatalf("API form of accepted resources: %v\n%s", err, arr.Bytes())
		}
		back, err := schema.Decode("", out)
		if err != nil {
			t.Fatalf("API form of accepted resources does not decode: %v\n%s", err, out)
		}
		for i := range back {
			if versions[back[i].Source.Document-1] != int64(i+1) {
				t.Fatalf("resource %d: versions %v", i, versions)
			}
			back[i].Source, rs[i].Source = schema.Source{}, schema.Source{}
		}
		if !reflect.DeepEqual(back, rs) {
			b1, _ := json.Marshal(rs)
			b2, _ := json.Marshal(back)
			t.Fatalf("round trip through the API form:\n got %s\nwant %s", b2, b1)
		}
	})
}
