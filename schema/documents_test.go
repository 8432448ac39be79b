package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// vhostYAML is decode_test.go's vhostDoc with labels, which the API form
// must carry through.
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

func TestDecodeDocuments(t *testing.T) {
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
		{"plain YAML", upstreamDoc + "---\n" + vhostYAML, 2, []int64{0, 0}, ""},
		{"version and times", withMeta(upstreamDoc, "  version: 7\n  createdAt: 2025-01-01T00:00:00Z\n  updatedAt: \"x\"\n"), 1, []int64{7}, ""},
		{"null version", withMeta(upstreamDoc, "  version: null\n"), 1, []int64{0}, ""},
		{"second document", upstreamDoc + "---\n" + withMeta(vhostYAML, "  version: 2\n"), 2, []int64{0, 2}, ""},
		{"JSON array", `[` + jsonDoc(t, upstreamDoc, 3) + `,` + jsonDoc(t, vhostYAML, 0) + `]`, 2, []int64{3, 0}, ""},
		{"empty documents still count", "---\n---\n" + withMeta(upstreamDoc, "  version: 4\n"), 1, []int64{4}, ""},
		{"version as a string", withMeta(upstreamDoc, "  version: \"7\"\n"), 0, nil, "metadata.version"},
		{"negative version", withMeta(upstreamDoc, "  version: -1\n"), 0, nil, "metadata.version"},
		{"version twice", withMeta(upstreamDoc, "  version: 1\n  version: 2\n"), 0, nil, "metadata.version"},
		{"other unknown metadata still refused", withMeta(upstreamDoc, "  version: 1\n  owner: me\n"), 0, nil, "metadata.owner"},
		{"alias still refused", withMeta(upstreamDoc, "  version: 1\n  labels: {a: &x b, c: *x}\n"), 0, nil, "metadata.labels.c"},
		{"array element not a mapping", `[1]`, 0, nil, ""},
		{"API list", `{"items":[` + jsonDoc(t, upstreamDoc, 3) + `,` + jsonDoc(t, vhostYAML, 0) + `]}`, 2, []int64{3, 0}, ""},
		{"API list as YAML", "items:\n  - " + strings.ReplaceAll(withMeta(upstreamDoc, "  version: 5\n"), "\n", "\n    "), 1, []int64{5}, ""},
		{"empty API list", `{"items":[]}`, 0, nil, ""},
		{"items beside other keys is a resource", "items: []\n" + upstreamDoc, 0, nil, "items"},
		{"API list element with an unknown field", `{"items":[{"apiVersion":"nxmesh/v1","kind":"Upstream","metadata":{"name":"a"},"spec":{"servers":[{"address":"10.0.0.1:80"}]},"status":{}}]}`, 0, nil, "status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, versions, err := DecodeDocuments("f.yaml", []byte(tc.in))
			if err == nil {
				if len(rs) != tc.count || len(versions) != len(rs) {
					t.Fatalf("%d resources and %d versions, want %d", len(rs), len(versions), tc.count)
				}
				if !slices.Equal(versions, tc.versions) {
					t.Errorf("versions %v, want %v", versions, tc.versions)
				}
				if tc.field != "" {
					t.Fatalf("accepted; want an error on %s", tc.field)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v (%T) carries no field error", err, err)
			}
			if tc.count != 0 || fe.Field != tc.field || fe.File != "f.yaml" {
				t.Fatalf("error on %q in %q: %v; want field %q in f.yaml", fe.Field, fe.File, err, tc.field)
			}
		})
	}
	// Without read-only metadata, DecodeDocuments is Decode.
	plain := upstreamDoc + "---\n" + vhostYAML
	a, _, err1 := DecodeDocuments("f", []byte(plain))
	b, err2 := Decode("f", []byte(plain))
	if err1 != nil || err2 != nil || !reflect.DeepEqual(a, b) {
		t.Errorf("DecodeDocuments and Decode differ on plain documents: %v, %v", err1, err2)
	}
}

// jsonDoc returns the YAML document as JSON, with metadata.version set
// unless version is 0.
func jsonDoc(t testing.TB, doc string, version int64) string {
	t.Helper()
	rs, err := Decode("", []byte(doc))
	if err != nil || len(rs) != 1 {
		t.Fatalf("decode %q: %v", doc, err)
	}
	return string(withVersion(t, rs[0], version))
}

// withVersion returns r as the API shows it: JSON with metadata.version
// and the timestamps.
func withVersion(t testing.TB, r Resource, version int64) []byte {
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

// FuzzDecodeDocuments checks that DecodeDocuments never panics, decodes
// whatever Decode accepts to the same resources with no versions, and that
// the resources of any accepted input, shown as the API shows them (a JSON
// array with versions and timestamps), decode back to the same resources
// with their versions.
func FuzzDecodeDocuments(f *testing.F) {
	f.Add([]byte(upstreamDoc + "---\n" + vhostYAML))
	f.Add([]byte("---\n---\n" + vhostYAML))
	f.Add([]byte(`[{"apiVersion":"nxmesh/v1","kind":"Upstream","metadata":{"name":"a","version":2},"spec":{"servers":[{"address":"[::1]:80"}]}}]`))
	f.Add([]byte("metadata: {version: 0x10, createdAt: &a x, updatedAt: *a}\n"))
	f.Add([]byte("[[], {}, null, 1, \"metadata\"]"))
	for _, v := range []string{"yes", "no", "on", "null", "~", "0x10", "0o7", "1e3", ".inf", "2025-01-01", "'", "\"", "#", ": x", "- x", "\u2028", "\ufeff", "\x00"} {
		q, _ := json.Marshal(v)
		f.Add([]byte(strings.Replace(vhostYAML, "upstream: api", "return: {status: 200, body: "+string(q)+"}", 1)))
		f.Add([]byte(strings.Replace(vhostYAML, "path: /", "path: "+string(q), 1)))
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte(strings.Repeat("[", 20000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		slow := time.AfterFunc(10*time.Second, func() { panic("DecodeDocuments took more than 10s") })
		defer slow.Stop()
		got, versions, err := DecodeDocuments("", data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, want Errors: %v", err, err)
			}
		}
		rs, err := Decode("", data)
		if err != nil {
			return
		}
		if !reflect.DeepEqual(got, rs) {
			t.Fatalf("DecodeDocuments and Decode differ on input Decode accepts")
		}
		for _, v := range versions {
			if v != 0 {
				t.Fatalf("versions %v from input without any", versions)
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
		for i := range rs {
			rs[i].Source = Source{}
		}
		// As a JSON array, and as the API's list, {"items": [...]}.
		list := append(append([]byte(`{"items":`), arr.Bytes()...), '}')
		for _, form := range [][]byte{arr.Bytes(), list} {
			back, versions, err := DecodeDocuments("", form)
			if err != nil {
				t.Fatalf("API form of accepted resources: %v\n%s", err, form)
			}
			for i := range back {
				if versions[i] != int64(i+1) {
					t.Fatalf("resource %d: versions %v", i, versions)
				}
				back[i].Source = Source{}
			}
			if !reflect.DeepEqual(back, rs) {
				b1, _ := json.Marshal(rs)
				b2, _ := json.Marshal(back)
				t.Fatalf("round trip through the API form:\n got %s\nwant %s\nfrom %s", b2, b1, form)
			}
		}
	})
}
