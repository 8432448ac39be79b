package nginx_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/schema"
)

// backend is an upstream server that names itself in the body and reports
// what it received in response headers.
func backend(t *testing.T, name string, status int) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Backend", name)
		h.Set("X-Powered-By", "go")
		h.Set("X-Got-Foo", r.Header.Get("X-Foo"))
		h.Set("X-Got-Cookie", r.Header.Get("Cookie"))
		h.Set("X-Got-Proto", r.Proto)
		h.Set("X-Got-Connection", r.Header.Get("Connection"))
		h.Set("X-Got-Path", r.URL.Path)
		h.Set("X-Got-Host", r.Host)
		w.WriteHeader(status)
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

func addr(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

func res(kind schema.Kind, name string, spec schema.Spec) schema.Resource {
	return schema.Resource{APIVersion: schema.APIVersion, Kind: kind, Metadata: schema.Metadata{Name: name}, Spec: spec}
}

func servers(addrs ...string) []schema.UpstreamServer {
	var out []schema.UpstreamServer
	for _, a := range addrs {
		out = append(out, schema.UpstreamServer{Address: a})
	}
	return out
}

// testCA returns a CA certificate pool and a leaf certificate and key (PEM)
// for host, signed by it.
func testCA(t *testing.T, host string) (*x509.CertPool, string, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "NxMesh test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool,
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

// TestEndToEnd starts real nginx on a compiled managed-mode bundle, with Go
// upstreams on loopback, and checks what clients see.
func TestEndToEnd(t *testing.T) {
	a, b := backend(t, "a", 200), backend(t, "b", 200)
	bad := backend(t, "bad", 502)
	up := websocket.Upgrader{}
	wsSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(wsSrv.Close)

	staticDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(staticDir, "files"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staticDir, "files", "a.txt"), []byte("static file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pool, certPEM, keyPEM := testCA(t, "secure.test")

	appPort, plainPort, tlsPort, statusPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	proxyTo := func(path, upstream string) schema.Location { return schema.Location{Path: path, Upstream: upstream} }
	rrLoc := proxyTo("/rr/", "rr")
	rrLoc.Headers = &schema.Headers{
		Request:  &schema.HeaderRules{Add: map[string]string{"X-Foo": "bar $remote_addr"}, Remove: []string{"Cookie"}},
		Response: &schema.HeaderRules{Add: map[string]string{"X-Frame-Options": "DENY"}, Remove: []string{"X-Powered-By"}},
	}
	rewrite := proxyTo("/rewrite/", "rr")
	rewrite.RewritePrefix = "/v2/"
	ws := proxyTo("/ws", "ws")
	ws.Match, ws.WebSocket = schema.MatchExact, true

	set := []schema.Resource{
		res(schema.KindUpstream, "rr", &schema.UpstreamSpec{Servers: servers(addr(a), addr(b))}),
		res(schema.KindUpstream, "lc", &schema.UpstreamSpec{LoadBalancing: schema.LeastConn, Servers: servers(addr(a), addr(b))}),
		res(schema.KindUpstream, "iph", &schema.UpstreamSpec{LoadBalancing: schema.IPHash, Servers: servers(addr(a), addr(b))}),
		res(schema.KindUpstream, "hsh", &schema.UpstreamSpec{LoadBalancing: schema.Hash, HashKey: "$request_uri", Servers: servers(addr(a), addr(b))}),
		res(schema.KindUpstream, "rand", &schema.UpstreamSpec{LoadBalancing: schema.RandomTwoLeastConn, Servers: servers(addr(a), addr(b))}),
		res(schema.KindUpstream, "ka", &schema.UpstreamSpec{Keepalive: 8, Servers: servers(addr(a))}),
		res(schema.KindUpstream, "retry", &schema.UpstreamSpec{Servers: servers(addr(bad), addr(a)),
			Retries: &schema.Retries{Tries: 2, Timeout: "5s", On: []string{"error", "http_502"}}}),
		res(schema.KindUpstream, "ws", &schema.UpstreamSpec{Servers: servers(addr(wsSrv))}),
		res(schema.KindVirtualHost, "app", &schema.VirtualHostSpec{
			ServerNames: []string{"app.test"},
			Listen:      []schema.Listen{{Port: appPort}},
			Headers:     &schema.Headers{Response: &schema.HeaderRules{Add: map[string]string{"X-Server": "app"}}},
			Locations: []schema.Location{
				rrLoc, rewrite, ws,
				proxyTo("/lc/", "lc"), proxyTo("/iph/", "iph"), proxyTo("/hsh/", "hsh"), proxyTo("/rand/", "rand"),
				proxyTo("/ka/", "ka"), proxyTo("/retry/", "retry"),
				{Path: "/hello", Match: schema.MatchExact, Return: &schema.Return{Status: 200, Body: "hello from $server_name\n"}},
				{Path: "/go", Match: schema.MatchExact, Return: &schema.Return{Status: 302, URL: "https://example.com/x"}},
				{Path: "/files/", Static: &schema.Static{Root: staticDir}},
			},
		}),
		res(schema.KindCertificate, "secure-cert", &schema.CertificateSpec{Certificate: certPEM, PrivateKey: keyPEM}),
		res(schema.KindVirtualHost, "secure", &schema.VirtualHostSpec{
			ServerNames: []string{"secure.test"},
			Listen:      []schema.Listen{{Port: plainPort}, {Port: tlsPort, TLS: true, HTTP2: true}},
			TLS: &schema.VirtualHostTLS{Certificate: "secure-cert", RedirectHTTP: true,
				HSTS: &schema.HSTS{MaxAge: 600, IncludeSubdomains: true}},
			Locations: []schema.Location{{Path: "/", Return: &schema.Return{Status: 200, Body: "secure"}}},
		}),
	}
	if err := schema.ValidateSet("e2e", set); err != nil {
		t.Fatal(err)
	}
	opts := nginx.Options{StatusListen: "127.0.0.1:" + strconv.Itoa(statusPort), StaticRoots: []string{staticDir}}
	if os.Geteuid() == 0 {
		opts.User = "root" // workers must read the test's temp directories
	}
	bundle, err := nginx.Compile(set, opts)
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartBundle(t, bundle, statusPort)
	for _, p := range []int{appPort, plainPort, tlsPort} {
		waitPort(t, p)
	}

	client := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(t *testing.T, port int, host, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(body)
	}
	app := func(t *testing.T, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		return get(t, appPort, "app.test", path, hdr...)
	}
	backends := func(t *testing.T, path string, n int) map[string]int {
		t.Helper()
		seen := map[string]int{}
		for range n {
			resp, body := app(t, path)
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %s %q", path, resp.Status, body)
			}
			seen[body]++
		}
		return seen
	}

	t.Run("generation", func(t *testing.T) {
		resp, body := get(t, statusPort, "localhost", "/nxmesh/generation")
		if resp.StatusCode != 200 || body != bundle.Hash {
			t.Errorf("generation: %s %q, want %q", resp.Status, body, bundle.Hash)
		}
		resp, body = get(t, statusPort, "localhost", "/nxmesh/status")
		if resp.StatusCode != 200 || !strings.Contains(body, "Active connections") {
			t.Errorf("status: %s %q", resp.Status, body)
		}
	})
	t.Run("round robin and header rules", func(t *testing.T) {
		if seen := backends(t, "/rr/x", 10); seen["a"] == 0 || seen["b"] == 0 {
			t.Errorf("round robin reached %v, want both backends", seen)
		}
		resp, _ := app(t, "/rr/x", "Cookie", "session=1")
		h := resp.Header
		checks := map[string]string{
			"X-Frame-Options": "DENY", "X-Server": "app", "X-Powered-By": "",
			"X-Got-Foo": "bar 127.0.0.1", "X-Got-Cookie": "", "X-Got-Host": "app.test",
		}
		for k, want := range checks {
			if got := h.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
	})
	t.Run("rewrite prefix", func(t *testing.T) {
		resp, _ := app(t, "/rewrite/abc")
		if got := resp.Header.Get("X-Got-Path"); got != "/v2/abc" {
			t.Errorf("upstream saw path %q, want /v2/abc", got)
		}
	})
	t.Run("least_conn", func(t *testing.T) {
		// Sequential requests leave no connections open, so least_conn
		// falls back to round robin and must reach both.
		if seen := backends(t, "/lc/", 10); seen["a"] == 0 || seen["b"] == 0 {
			t.Errorf("least_conn reached %v, want both backends", seen)
		}
	})
	t.Run("ip_hash", func(t *testing.T) {
		if seen := backends(t, "/iph/", 10); len(seen) != 1 {
			t.Errorf("ip_hash sent one client to %v, want one backend", seen)
		}
	})
	t.Run("hash on request_uri", func(t *testing.T) {
		all := map[string]int{}
		for i := range 20 {
			seen := backends(t, fmt.Sprintf("/hsh/item-%d", i), 3)
			if len(seen) != 1 {
				t.Errorf("/hsh/item-%d reached %v, want one backend", i, seen)
			}
			for k, v := range seen {
				all[k] += v
			}
		}
		if all["a"] == 0 || all["b"] == 0 {
			t.Errorf("20 URIs all hashed to %v", all)
		}
	})
	t.Run("random two least_conn", func(t *testing.T) {
		backends(t, "/rand/", 5)
	})
	t.Run("keepalive", func(t *testing.T) {
		resp, _ := app(t, "/ka/")
		if p, c := resp.Header.Get("X-Got-Proto"), resp.Header.Get("X-Got-Connection"); p != "HTTP/1.1" || c != "" {
			t.Errorf("upstream saw %s with Connection %q, want HTTP/1.1 without Connection", p, c)
		}
	})
	t.Run("retries", func(t *testing.T) {
		if seen := backends(t, "/retry/", 6); seen["a"] != 6 {
			t.Errorf("retry reached %v, want only a", seen)
		}
	})
	t.Run("return", func(t *testing.T) {
		resp, body := app(t, "/hello")
		if resp.StatusCode != 200 || body != "hello from app.test\n" || resp.Header.Get("Content-Type") != "text/plain" {
			t.Errorf("GET /hello: %s %q %q", resp.Status, body, resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("X-Server") != "app" {
			t.Error("server-level response header missing on a return location")
		}
		resp, _ = app(t, "/go")
		if resp.StatusCode != 302 || resp.Header.Get("Location") != "https://example.com/x" {
			t.Errorf("GET /go: %s Location %q", resp.Status, resp.Header.Get("Location"))
		}
	})
	t.Run("static", func(t *testing.T) {
		resp, body := app(t, "/files/a.txt")
		if resp.StatusCode != 200 || body != "static file\n" || resp.Header.Get("Content-Type") != "text/plain" {
			t.Errorf("GET /files/a.txt: %s %q %q", resp.Status, body, resp.Header.Get("Content-Type"))
		}
	})
	t.Run("websocket", func(t *testing.T) {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", appPort), http.Header{"Host": {"app.test"}})
		if err != nil {
			t.Fatalf("dial through nginx: %v (response %v)", err, resp)
		}
		defer c.Close()
		for _, msg := range []string{"one", "two"} {
			if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, got, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != "echo: "+msg {
				t.Errorf("got %q, want %q", got, "echo: "+msg)
			}
		}
	})
	t.Run("tls", func(t *testing.T) {
		tr := &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "secure.test"},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", tlsPort))
			},
		}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		resp, err := c.Get(fmt.Sprintf("https://secure.test:%d/", tlsPort))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "secure" || resp.ProtoMajor != 2 {
			t.Errorf("https: %s %q over %s, want \"secure\" over HTTP/2", resp.Status, body, resp.Proto)
		}
		if got := resp.Header.Get("Strict-Transport-Security"); got != "max-age=600; includeSubDomains" {
			t.Errorf("HSTS %q", got)
		}
	})
	t.Run("redirect http", func(t *testing.T) {
		resp, _ := get(t, plainPort, "secure.test", "/p?q=1")
		want := fmt.Sprintf("https://secure.test:%d/p?q=1", tlsPort)
		if resp.StatusCode != 301 || resp.Header.Get("Location") != want {
			t.Errorf("plain request: %s Location %q, want 301 %q", resp.Status, resp.Header.Get("Location"), want)
		}
	})
}

func waitPort(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %d: %v", port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
