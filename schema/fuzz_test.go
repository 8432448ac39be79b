package schema

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzDecode checks that Decode never panics, that every error it returns
// is Errors, and that every resource it accepts re-validates and survives
// a JSON round trip unchanged.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(upstreamDoc + "---\n" + vhostDoc))
	f.Add([]byte(`{"apiVersion":"nxmesh/v1","kind":"Upstream","metadata":{"name":"a"},"spec":{"servers":[{"address":"[::1]:80"}]}}`))
	hostile := []string{
		"\n", "a\nb", ";", "{", "}", "#", `"`, "'", `\`, `\"`, "$", "$host", "$hostname", "${host}", "\x00",
		"\u2028", "\ufeff", "é", "日本", strings.Repeat("a", 5000), "\t", "\r\n", "`", "..", "*", "_",
	}
	for _, h := range hostile {
		q, _ := json.Marshal(h)
		s := string(q)
		f.Add([]byte(strings.Replace(vhostDoc, "path: /", "path: "+s, 1)))
		f.Add([]byte(strings.Replace(vhostDoc, "[example.com]", "["+s+"]", 1)))
		f.Add([]byte(strings.Replace(vhostDoc, "upstream: api", "return: {status: 200, body: "+s+"}", 1)))
		f.Add([]byte(vhostDoc + "      headers: {response: {add: {X-A: " + s + "}}}\n"))
		f.Add([]byte(strings.Replace(upstreamDoc, "10.0.0.1:8080", "unix:/"+strings.Trim(s, `"`), 1)))
		f.Add([]byte(strings.Replace(upstreamDoc, "name: api", "name: api\n  labels: {"+s+": "+s+"}", 1)))
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("---\n---\n...\n"))
	f.Add([]byte(strings.Repeat("[", 20000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		// A slow input is a finding too (a daemon decodes untrusted files):
		// crash the worker so the fuzzer saves it.
		slow := time.AfterFunc(10*time.Second, func() { panic("Decode took more than 10s") })
		defer slow.Stop()
		rs, err := Decode("fuzz.yaml", data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is %T, want non-empty Errors: %v", err, err)
			}
			return
		}
		for _, r := range rs {
			if err := r.Validate(); err != nil {
				t.Fatalf("accepted resource does not re-validate: %v", err)
			}
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			var back Resource
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("unmarshal %s: %v", b, err)
			}
			r.Source = Source{}
			if !reflect.DeepEqual(back, r) {
				t.Fatalf("JSON round trip changed the resource\n got: %#v\nwant: %#v", back, r)
			}
		}
	})
}
