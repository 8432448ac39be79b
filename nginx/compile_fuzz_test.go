package nginx

import (
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nxmesh/nxmesh/schema"
)

// fuzzFields are the string fields FuzzCompile writes arbitrary values
// into, each with a harmless value of the same role.
var fuzzFields = []struct {
	name, harmless string
}{
	{"serverName", "example.com"},
	{"prefixPath", "/p"},
	{"exactPath", "/e"},
	{"regexPath", "^/r/[a-z]+$"},
	{"requestHeaderName", "X-Req"},
	{"requestHeaderValue", "v"},
	{"responseHeaderName", "X-Resp"},
	{"responseHeaderValue", "v"},
	{"removedHeaderName", "X-Gone"},
	{"returnBody", "ok"},
	{"returnURL", "https://example.com/"},
	{"upstreamAddress", "10.0.0.1:80"},
	{"staticRoot", "/var/www/site"},
	{"indexName", "index.html"},
	{"hashKey", "$request_uri"},
	{"labelValue", "eu"},
	{"certificateName", "cert"},
	{"upstreamName", "api"},
	{"vhostName", "web"},
	{"rewritePrefix", "/v1/"},
	{"timeout", "5s"},
	{"clientMaxBodySize", "1m"},
	{"failTimeout", "10s"},
	{"retryOn", "error"},
}

// headerNamesInUse are names the template or the compiler already set; a
// fuzzed header name equal to one of them legitimately merges two rules.
var headerNamesInUse = []string{"host", "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "connection", "upgrade",
	"x-req", "x-resp", "x-gone", "strict-transport-security"}

var fuzzCert = sync.OnceValue(func() *schema.CertificateSpec {
	rs, err := schema.Decode("golden.yaml", mustRead("testdata/golden.yaml"))
	if err != nil {
		panic(err)
	}
	for _, r := range rs {
		if c, ok := r.Spec.(*schema.CertificateSpec); ok {
			return c
		}
	}
	panic("no certificate in testdata/golden.yaml")
})

// fuzzSet returns the template set and options with field i set to v and
// every other field harmless.
func fuzzSet(i int, v string) ([]schema.Resource, Options) {
	val := func(name string) string {
		for j, f := range fuzzFields {
			if f.name == name {
				if j == i {
					return v
				}
				return f.harmless
			}
		}
		panic("unknown field " + name)
	}
	mk := func(kind schema.Kind, name string, spec schema.Spec) schema.Resource {
		return schema.Resource{APIVersion: schema.APIVersion, Kind: kind, Metadata: schema.Metadata{Name: name}, Spec: spec}
	}
	maxFails := 2
	set := []schema.Resource{
		mk(schema.KindUpstream, val("upstreamName"), &schema.UpstreamSpec{
			Servers:   []schema.UpstreamServer{{Address: val("upstreamAddress"), Weight: 2, MaxFails: &maxFails, FailTimeout: schema.Duration(val("failTimeout"))}},
			Keepalive: 4,
			Retries:   &schema.Retries{Tries: 2, Timeout: "3s", On: []string{val("retryOn")}},
		}),
		mk(schema.KindUpstream, "hashed", &schema.UpstreamSpec{
			LoadBalancing: schema.Hash, HashKey: val("hashKey"),
			Servers: []schema.UpstreamServer{{Address: "10.0.0.2:80"}},
		}),
		mk(schema.KindCertificate, val("certificateName"), fuzzCert()),
		mk(schema.KindVirtualHost, val("vhostName"), &schema.VirtualHostSpec{
			ServerNames: []string{val("serverName"), "www.example.com"},
			Listen:      []schema.Listen{{Port: 80}, {Port: 443, TLS: true, HTTP2: true}},
			TLS: &schema.VirtualHostTLS{Certificate: val("certificateName"), RedirectHTTP: true,
				HSTS: &schema.HSTS{MaxAge: 100, Preload: true}},
			Headers: &schema.Headers{Response: &schema.HeaderRules{
				Add:    map[string]string{val("responseHeaderName"): val("responseHeaderValue")},
				Remove: []string{val("removedHeaderName")},
			}},
			ClientMaxBodySize: schema.Size(val("clientMaxBodySize")),
			Selector:          &schema.Selector{MatchLabels: map[string]string{"region": val("labelValue")}},
			Locations: []schema.Location{
				{Path: val("prefixPath"), Upstream: val("upstreamName"), RewritePrefix: val("rewritePrefix"),
					Timeouts: &schema.Timeouts{Read: schema.Duration(val("timeout"))},
					Headers: &schema.Headers{Request: &schema.HeaderRules{
						Add: map[string]string{val("requestHeaderName"): val("requestHeaderValue")},
					}}},
				{Path: "/ws", Match: schema.MatchExact, Upstream: "hashed", WebSocket: true},
				{Path: val("exactPath"), Match: schema.MatchExact, Return: &schema.Return{Status: 200, Body: val("returnBody")}},
				{Path: "/old", Return: &schema.Return{Status: 301, URL: val("returnURL")}},
				{Path: val("regexPath"), Match: schema.MatchRegex, Static: &schema.Static{Root: val("staticRoot"), Index: []string{val("indexName")}}},
			},
		}),
	}
	return set, Options{Labels: map[string]string{"region": val("labelValue")}}
}

var fuzzBaseline = sync.OnceValue(func() []string {
	set, opts := fuzzSet(-1, "")
	if err := schema.ValidateSet("fuzz", set); err != nil {
		panic(err)
	}
	b, err := Compile(set, opts)
	if err != nil {
		panic(err)
	}
	return bundleShape(panicTB{}, b)
})

// FuzzCompile writes an arbitrary string into one field of a template set.
// Whatever the schema says about it, Compile must either refuse it or write
// files whose directive structure (names, argument counts, nesting) is that
// of the harmless value, holding no forbidden directive and no include
// outside the bundle: a value can change what an argument says, never what
// nginx reads as a directive.
func FuzzCompile(f *testing.F) {
	nasty := []string{"", "\n", ";", "{", "}", "#", "\"", "'", "\\", "$", "\x00", "\r", "\t", " ",
		"a\"; load_module /tmp/x.so; #", "/p;\ninclude /etc/passwd;", "x}\nserver {", "${host}", "$remote_addr",
		"$ssl_client_cert", "\\\"", "é☃", "\xff\xfe", strings.Repeat("a", 5000), "a b", "a\\", "`id`", "/p\\", "*.example.com"}
	for i, fld := range fuzzFields {
		f.Add(uint8(i), fld.harmless)
		for _, s := range nasty {
			f.Add(uint8(i), s)
		}
		f.Add(uint8(i), fld.harmless+"\n")
		f.Add(uint8(i), fld.harmless+"\";")
	}
	f.Fuzz(func(t *testing.T, field uint8, v string) {
		i := int(field) % len(fuzzFields)
		set, opts := fuzzSet(i, v)
		validErr := schema.ValidateSet("fuzz", set)
		b, err := Compile(set, opts)
		if err != nil {
			return // refused: fine whether or not the schema caught it
		}
		assertSafe(t, b, "")
		if v == "" {
			return // an empty optional value leaves a directive out
		}
		name := fuzzFields[i].name
		if strings.HasSuffix(name, "HeaderName") && slices.Contains(headerNamesInUse, strings.ToLower(v)) {
			return
		}
		if got, want := bundleShape(t, b), fuzzBaseline(); !slices.Equal(got, want) {
			t.Fatalf("field %s = %q (schema: %v) changed the directive structure:\n got %v\nwant %v", name, v, validErr, got, want)
		}
	})
}

// panicTB lets the baseline, computed outside any test, use bundleShape.
type panicTB struct{ testing.TB }

func (panicTB) Helper()                   {}
func (panicTB) Fatalf(f string, a ...any) { panic(f) }

func mustRead(p string) []byte {
	data, err := os.ReadFile(p)
	if err != nil {
		panic(err)
	}
	return data
}
