package schema

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// testCert returns a self-signed ECDSA certificate and its PKCS#8 key, PEM.
func testCert(t testing.TB) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "example.com"},
		DNSNames:     []string{"example.com"},
		NotBefore:    time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:     time.Date(2035, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// indent prefixes every line of s with n spaces, for YAML block scalars.
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad) + "\n"
}

func doc(kind, spec string) string {
	return "apiVersion: nxmesh/v1\nkind: " + kind + "\nmetadata:\n  name: x\nspec:\n" + indent(spec, 2)
}

func TestValidate(t *testing.T) {
	certPEM, keyPEM := testCert(t)
	otherCert, otherKey := testCert(t)
	ecKey := func() string {
		b, _ := pem.Decode([]byte(keyPEM))
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	}()
	cert := func(c, k string) string {
		return doc("Certificate", "certificate: |\n"+indent(c, 2)+"privateKey: |\n"+indent(k, 2))
	}
	vh := func(extra string) string {
		if strings.HasPrefix(extra, "serverNames:") {
			return doc("VirtualHost", extra)
		}
		return doc("VirtualHost", "serverNames: [example.com]\n"+extra)
	}
	loc := func(l string) string {
		return vh("locations:\n  - " + strings.ReplaceAll(strings.TrimRight(l, "\n"), "\n", "\n    ") + "\n")
	}
	up := func(extra string) string {
		return doc("Upstream", extra)
	}

	tests := []struct {
		name  string
		input string
		want  []string // each is "field: message" or a prefix of one; none means valid
	}{
		// metadata
		{"bad name", strings.Replace(up("servers: [{address: a:1}]"), "name: x", "name: Web_1", 1),
			[]string{`metadata.name: "Web_1" is not a valid name`}},
		{"long name", strings.Replace(up("servers: [{address: a:1}]"), "name: x", "name: "+strings.Repeat("a", 64), 1),
			[]string{`metadata.name: "aaaa`}},
		{"good labels", strings.Replace(up("servers: [{address: a:1}]"), "name: x", "name: x\n  labels: {app.kubernetes.io/name: shop, tier: \"\"}", 1), nil},
		{"bad label key", strings.Replace(up("servers: [{address: a:1}]"), "name: x", "name: x\n  labels: {\"-a\": b}", 1),
			[]string{`metadata.labels["-a"]: label key "-a" is invalid`}},
		{"bad label value", strings.Replace(up("servers: [{address: a:1}]"), "name: x", "name: x\n  labels: {a: \"b c\"}", 1),
			[]string{`metadata.labels.a: label value "b c" is invalid`}},

		// upstream
		{"no servers", up("servers: []"), []string{"spec.servers: at least one server is required"}},
		{"addresses", up(`servers:
  - address: a.example.com:80
  - address: 10.0.0.1:65535
  - address: "[::1]:8080"
  - address: unix:/run/app.sock
`), nil},
		{"bad addresses", up(`servers:
  - address: a.example.com
  - address: 10.0.0.256:80
  - address: "::1:80"
  - address: "[fe80::1%eth0]:80"
  - address: unix:run/app.sock
  - address: unix:/run/../etc/x
  - address: a:0
  - address: "a b:80"
  - address: a:080
`), []string{
			`spec.servers[0].address: "a.example.com" has no port`,
			`spec.servers[1].address: "10.0.0.256:80" does not hold a valid IPv4 address`,
			`spec.servers[2].address: "::1:80" is not a valid address; write IPv6 addresses in brackets`,
			`spec.servers[3].address: "[fe80::1%eth0]:80" does not hold a valid IPv6 address`,
			`spec.servers[4].address: "unix:run/app.sock" is not a valid unix socket address`,
			`spec.servers[5].address: "unix:/run/../etc/x" is not a valid unix socket address`,
			`spec.servers[6].address: "a:0": port "0" must be a number from 1 to 65535`,
			`spec.servers[7].address: "a b:80" does not hold a valid hostname`,
			`spec.servers[8].address: "a:080": port "080"`,
		}},
		{"server numbers", up(`servers:
  - {address: a:1, weight: 1001, maxFails: 101, failTimeout: 10x}
  - {address: a:2, backup: true, down: true}
`), []string{
			"spec.servers[0].weight: must be from 1 to 1000, got 1001",
			"spec.servers[0].maxFails: must be from 0 to 100, got 101",
			`spec.servers[0].failTimeout: "10x" is not a valid duration`,
			"spec.servers[1]: backup and down cannot both be set",
		}},
		{"hash needs a key", up("servers: [{address: a:1}]\nloadBalancing: hash"), []string{"spec.hashKey: required when loadBalancing is hash"}},
		{"hash key without hash", up("servers: [{address: a:1}]\nhashKey: $host"), []string{"spec.hashKey: allowed only when loadBalancing is hash"}},
		{"hash key allowed", up("servers: [{address: a:1}]\nloadBalancing: hash\nhashKey: $cookie_session_id"), nil},
		{"hash key refused", up("servers: [{address: a:1}]\nloadBalancing: hash\nhashKey: $ssl_client_cert"),
			[]string{`spec.hashKey: "$ssl_client_cert" is not allowed; use one of $remote_addr, $request_uri, $uri, $host, $http_x_forwarded_for, $cookie_<name> or $arg_<name>`}},
		{"ip_hash forbids backup", up("servers: [{address: a:1}, {address: a:2, backup: true}]\nloadBalancing: ip_hash"),
			[]string{"spec.servers[1].backup: not allowed with loadBalancing ip_hash"}},
		{"unknown balancing", up("servers: [{address: a:1}]\nloadBalancing: fastest"), []string{`spec.loadBalancing: "fastest" is not a balancing method`}},
		{"retries", up("servers: [{address: a:1}]\nkeepalive: 10001\nretries: {tries: 101, timeout: 5, on: [error, http_418, error]}"), []string{
			"spec.retries.timeout: expected string, got integer (quote the value)",
			"spec.keepalive: must be from 0 to 10000, got 10001",
			"spec.retries.tries: must be from 0 to 100, got 101",
			`spec.retries.on[1]: "http_418" is not a retry condition`,
			`spec.retries.on[2]: duplicate condition "error"`,
		}},

		// virtual host
		{"server names", vh(`serverNames: [example.com, "*.example.com", EXAMPLE.org, "10.0.0.1", localhost]
locations: [{path: /, upstream: u}]`), nil},
		{"bad server names", vh(`serverNames: ["_", "a..b", "*.*.a", "Example.com", example.COM, "-a.com", "a.com."]
locations: [{path: /, upstream: u}]`), []string{
			`spec.serverNames[0]: "_" is not allowed`,
			`spec.serverNames[1]: "a..b" is not a valid hostname`,
			`spec.serverNames[2]: "*.*.a" is not a valid hostname`,
			`spec.serverNames[4]: duplicate server name "example.COM"`,
			`spec.serverNames[5]: "-a.com" is not a valid hostname`,
			`spec.serverNames[6]: "a.com." is not a valid hostname`,
		}},
		{"listen", vh(`locations: [{path: /, upstream: u}]
listen:
  - {port: 80, http2: true}
  - {port: 80}
  - {port: 443, tls: true}
  - {port: 70000}`), []string{
			"spec.listen[0].http2: allowed only with tls: true",
			"spec.listen[1].port: duplicate port 80",
			"spec.listen[2].tls: requires spec.tls to name a certificate",
			"spec.listen[3].port: must be from 1 to 65535, got 70000",
		}},
		{"tls", vh(`locations: [{path: /, upstream: u}]
tls: {certificate: Bad_Name, hsts: {maxAge: 63072001}}`), []string{
			`spec.tls.certificate: "Bad_Name" is not a valid name`,
			"spec.tls.hsts.maxAge: must be from 0 to 63072000, got 63072001",
		}},
		{"no locations", vh("locations: []"), []string{"spec.locations: at least one location is required"}},
		{"path must start with a slash", loc("path: api\nupstream: u"), []string{`spec.locations[0].path: must start with "/"`}},
		{"prefix path characters", vh(`locations:
  - {path: "/a b", upstream: u}
  - {path: "/a;b", upstream: u}
  - {path: "/a{b}", upstream: u}
  - {path: "/$x", upstream: u}
  - {path: "/%zz", upstream: u}
  - {path: "/a%20b/~x@y:z", upstream: u}`), []string{
			`spec.locations[0].path: "/a b" may contain only letters`,
			`spec.locations[1].path: "/a;b" may contain only`,
			`spec.locations[2].path: "/a{b}" may contain only`,
			`spec.locations[3].path: "/$x" may contain only`,
			`spec.locations[4].path: "/%zz" may contain only`,
		}},
		{"regex paths", vh(`locations:
  - {path: '^/api/v[0-9]+/', match: regex, upstream: u}
  - {path: '/.*\.php$', match: regex, upstream: u}
  - {path: '\.php$', match: regex, upstream: u}
  - {path: '^/a{2}', match: regex, upstream: u}
  - {path: '^/a$b', match: regex, upstream: u}
  - {path: '^/(?P<x>a)', match: regex, upstream: u}
  - {path: '^/(a', match: regex, upstream: u}
  - {path: "^/a\tb", match: regex, upstream: u}`), []string{
			`spec.locations[2].path: a regex location must start with "/" or "^/"`,
			`spec.locations[3].path: a regex location may not contain " ' ; { } # or ` + "`",
			`spec.locations[4].path: "$" is allowed only as the last character`,
			`spec.locations[5].path: "(?" groups`,
			"spec.locations[6].path: invalid regular expression: missing closing ): `^/(a`",
			"spec.locations[7].path: a regex location may contain only visible ASCII",
		}},
		{"duplicate locations", vh(`locations:
  - {path: /a, upstream: u}
  - {path: /a, match: prefix, upstream: u}
  - {path: /a, match: exact, upstream: u}`), []string{`spec.locations[1].path: duplicate prefix location "/a" (also spec.locations[0])`}},
		{"exactly one action", vh(`locations:
  - {path: /a}
  - {path: /b, upstream: u, static: {root: /srv}}`), []string{
			"spec.locations[0]: exactly one of upstream, return or static is required, got none",
			"spec.locations[1]: exactly one of upstream, return or static is allowed, got upstream, static",
		}},
		{"proxy-only fields", loc(`path: /
static: {root: /srv, index: [index.html, ../x]}
rewritePrefix: /x
websocket: true
timeouts: {read: 1s}
headers: {request: {add: {X-A: b}}}`), []string{
			"spec.locations[0].rewritePrefix: allowed only with upstream",
			"spec.locations[0].websocket: allowed only with upstream",
			"spec.locations[0].timeouts: allowed only with upstream",
			"spec.locations[0].headers.request: allowed only with upstream",
			`spec.locations[0].static.index[1]: "../x" is not a simple file name`,
		}},
		{"static root", vh(`locations:
  - {path: /a, static: {root: /srv/../etc}}
  - {path: /b, static: {root: srv}}
  - {path: /c, static: {root: /srv/}}
  - {path: /d, static: {root: /srv/www}}`), []string{
			"spec.locations[0].static.root: must be an absolute, clean path",
			"spec.locations[1].static.root: must be an absolute, clean path",
			"spec.locations[2].static.root: must be an absolute, clean path",
		}},
		{"returns", vh(`locations:
  - {path: /a, return: {status: 301, url: "https://$host$request_uri"}}
  - {path: /b, return: {status: 302, url: /new}}
  - {path: /c, return: {status: 204}}
  - {path: /d, return: {status: 200, body: "hello, $remote_addr\nbye"}}
  - {path: /e, return: {status: 404, body: "nicht gefunden – ü"}}`), nil},
		{"bad returns", vh(`locations:
  - {path: /a, return: {status: 600}}
  - {path: /b, return: {status: 200, url: /x}}
  - {path: /c, return: {status: 301}}
  - {path: /d, return: {status: 301, url: "//evil.example"}}
  - {path: /e, return: {status: 301, url: "javascript:alert(1)"}}
  - {path: /f, return: {status: 302, url: "/a b"}}
  - {path: /g, return: {status: 200, body: "a\tb"}}
  - {path: /h, return: {status: 200, body: "$ssl_client_s_dn"}}
  - {path: /i, return: {status: 301, body: x, url: /y}}`), []string{
			"spec.locations[0].return.status: must be from 200 to 599, got 600",
			"spec.locations[1].return.url: allowed only with status 301, 302, 303, 307 or 308",
			"spec.locations[2].return.url: required with redirect status 301",
			`spec.locations[3].return.url: must be an absolute http(s) URL or a path starting with a single "/"`,
			"spec.locations[4].return.url: must be an absolute http:// or https:// URL",
			"spec.locations[5].return.url: must be a URL of RFC 3986 characters",
			"spec.locations[6].return.body: may contain only printable characters and newlines",
			`spec.locations[7].return.body: "$" must start one of the allowed variables $remote_addr, $host, $request_id, $scheme, $request_uri, $uri, $server_name or $http_<name>, because nginx would interpolate it`,
			"spec.locations[8].return: body and url cannot both be set",
		}},
		{"headers", vh(`locations: [{path: /, upstream: u, headers: {request: {add: {X-Fwd: $http_x_forwarded_for}}}}]
headers:
  request: {add: {X-A: b}}
  response:
    add:
      "X Bad": v
      X-Var: "$hostname"
      X-Ctl: "a\u0007b"
      X-Empty: ""
      X-Both: v
    remove: [x-both, "a:b"]`), []string{
			"spec.headers.request: not allowed here",
			`spec.headers.response.add["X Bad"]: header name "X Bad" is invalid`,
			"spec.headers.response.add.X-Ctl: may contain only visible ASCII characters and spaces",
			"spec.headers.response.add.X-Empty: must not be empty; use remove to drop a header",
			`spec.headers.response.add.X-Var: "$" must start one of the allowed variables`,
			`spec.headers.response.remove[0]: header "x-both" is both added and removed`,
			`spec.headers.response.remove[1]: header name "a:b" is invalid`,
		}},
		{"sizes and durations", vh(`clientMaxBodySize: 10x
locations:
  - {path: /, upstream: u, clientMaxBodySize: 512, timeouts: {connect: 1000000000s, read: 1.5s, send: 500ms}}`), []string{
			`spec.locations[0].timeouts.connect: "1000000000s" is not a valid duration`,
			`spec.locations[0].timeouts.read: "1.5s" is not a valid duration`,
			`spec.clientMaxBodySize: "10x" is not a valid size`,
		}},
		{"selector", vh("locations: [{path: /, upstream: u}]\nselector: {matchLabels: {\"a b\": c}}"),
			[]string{`spec.selector.matchLabels["a b"]: label key "a b" is invalid`}},

		// certificate
		{"certificate pkcs8", cert(certPEM, keyPEM), nil},
		{"certificate ec key", cert(certPEM, ecKey), nil},
		{"certificate and chain", cert(certPEM+otherCert, keyPEM), nil},
		{"key does not match", cert(certPEM, otherKey), []string{"spec.privateKey: does not match the public key of the first certificate"}},
		{"junk around the pem", cert("hello\n"+certPEM, keyPEM+"trailing\n"), []string{
			"spec.certificate: must contain only PEM blocks and whitespace",
			"spec.privateKey: must hold exactly one unencrypted PEM private key",
		}},
		{"key in certificate", cert(keyPEM, keyPEM), []string{`spec.certificate: PEM block 1 is "PRIVATE KEY"; only CERTIFICATE blocks are allowed`}},
		{"certificate for key", cert(certPEM, certPEM), []string{"spec.privateKey: must hold exactly one unencrypted PEM private key"}},
		{"broken certificate", cert("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", keyPEM), []string{"spec.certificate: PEM block 1 is not a valid X.509 certificate"}},
		{"broken key", cert(certPEM, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), []string{"spec.privateKey: is not a valid PRIVATE KEY block"}},
		{"missing certificate", doc("Certificate", "privateKey: x"), []string{"spec.certificate: required", "spec.privateKey: must hold exactly one"}},
		{"redacted key, as get prints it", cert(certPEM, RedactedKeyPrefix+"0123456789abcdef\n"), []string{"spec.privateKey: is the digest the API shows in place of a key"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode("t.yaml", []byte(tc.input))
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected error:\n%v\ninput:\n%s", err, tc.input)
				}
				return
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %v (%T), want Errors", err, err)
			}
			if len(es) != len(tc.want) {
				t.Errorf("got %d errors, want %d:\n%v", len(es), len(tc.want), err)
			}
			for i, want := range tc.want {
				if i >= len(es) {
					break
				}
				got := strings.TrimPrefix(es[i].Error(), "t.yaml: document 1: ")
				if !strings.HasPrefix(got, want) {
					t.Errorf("error %d\n got: %s\nwant: %s...", i, got, want)
				}
			}
			if strings.Contains(err.Error(), "MIG") || strings.Contains(err.Error(), "BEGIN") {
				t.Errorf("error quotes PEM material: %v", err)
			}
		})
	}
}

func TestValidateSet(t *testing.T) {
	certPEM, keyPEM := testCert(t)
	certificate := func(name string) Resource {
		return Resource{APIVersion: APIVersion, Kind: KindCertificate, Metadata: Metadata{Name: name},
			Spec: &CertificateSpec{Certificate: certPEM, PrivateKey: keyPEM}}
	}
	upstream := func(name string, doc int) Resource {
		return Resource{APIVersion: APIVersion, Kind: KindUpstream, Metadata: Metadata{Name: name},
			Spec: &UpstreamSpec{Servers: []UpstreamServer{{Address: "a:80"}}}, Source: Source{"set.yaml", doc}}
	}
	vhost := func(name, cert string, doc int, upstreams ...string) Resource {
		s := &VirtualHostSpec{ServerNames: []string{name + ".example.com"}}
		if cert != "" {
			s.TLS = &VirtualHostTLS{Certificate: cert}
		}
		for i, u := range upstreams {
			s.Locations = append(s.Locations, Location{Path: "/" + string(rune('a'+i)), Upstream: u})
		}
		return Resource{APIVersion: APIVersion, Kind: KindVirtualHost, Metadata: Metadata{Name: name}, Spec: s, Source: Source{"set.yaml", doc}}
	}
	tests := []struct {
		name string
		rs   []Resource
		want string
	}{
		{"resolved", []Resource{certificate("c"), upstream("u", 2), vhost("w", "c", 3, "u", "u")}, ""},
		{"same name, other kind", []Resource{upstream("w", 1), vhost("w", "", 2, "w")}, ""},
		{"duplicate", []Resource{upstream("u", 1), upstream("u", 4)},
			`set.yaml: document 4: metadata.name: duplicate Upstream "u" (first defined in document 1)`},
		{"missing references", []Resource{upstream("u", 1), vhost("w", "nope", 2, "u", "gone")},
			`set.yaml: document 2: spec.tls.certificate: no Certificate named "nope"` + "\n" +
				`set.yaml: document 2: spec.locations[1].upstream: no Upstream named "gone"`},
		{"invalid members are reported too", []Resource{upstream("u", 1), vhost("w", "", 2)},
			`set.yaml: document 2: spec.locations: at least one location is required`},
		{"no source", []Resource{certificate("c"), certificate("c")},
			`other.yaml: metadata.name: duplicate Certificate "c"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := "set.yaml"
			if tc.name == "no source" {
				file = "other.yaml"
			}
			err := ValidateSet(file, tc.rs)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || err.Error() != tc.want):
				t.Fatalf("error\n got: %v\nwant: %s", err, tc.want)
			}
		})
	}
}

// TestDisallowedVariable: the one scanner the schema and the compiler share.
func TestDisallowedVariable(t *testing.T) {
	for _, tc := range []struct {
		in, name string
		found    bool
	}{
		{"plain text", "", false},
		{"$remote_addr via $host", "", false},
		{"$http_x_forwarded_for", "", false},
		{"$hostname", "hostname", true}, // greedy, as nginx reads it
		{"a $ssl_client_cert b", "ssl_client_cert", true},
		{"${host}", "", true}, // braces are not allowed: the name is empty
		{"$http_", "http_", true},
		{"trailing $", "", true},
	} {
		name, found := DisallowedVariable(tc.in)
		if name != tc.name || found != tc.found {
			t.Errorf("DisallowedVariable(%q) = %q, %v; want %q, %v", tc.in, name, found, tc.name, tc.found)
		}
	}
}
