package hub

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/pki/ca"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct {
	mu  sync.Mutex // guards off
	off time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

func testConfig(t testing.TB, dir string) Config {
	t.Helper()
	return Config{DataDir: dir, APIAddr: "127.0.0.1:0", AgentAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}
}

// startHub runs a hub until the test ends.
func startHub(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start hub: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub Run: %v", err)
		}
		s.Close()
	})
	return s
}

// client is an API client that trusts the hub's root.
type client struct {
	t     testing.TB
	base  string
	http  *http.Client
	token string
}

func newClient(t testing.TB, s *Server) *client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.RootPEM())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, MaxIdleConnsPerHost: 32}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: s.APIURL(), http: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

type apiErr struct {
	Status int
	Code   string `json:"code"`
	Msg    string `json:"message"`
	Field  string `json:"field"`
}

// call sends in as JSON and decodes a 2xx answer into out; it returns the
// error envelope of any other status.
func (c *client) call(method, path string, in, out any) (*apiErr, error) {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, body)
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		var env struct{ Error *apiErr }
		if err := json.Unmarshal(data, &env); err != nil || env.Error == nil {
			return nil, errors.New(resp.Status + ": " + string(data))
		}
		env.Error.Status = resp.StatusCode
		return env.Error, nil
	}
	if out != nil && len(data) > 0 {
		return nil, json.Unmarshal(data, out)
	}
	return nil, nil
}

func (c *client) mustCall(method, path string, in, out any) {
	c.t.Helper()
	ae, err := c.call(method, path, in, out)
	if err != nil || ae != nil {
		c.t.Fatalf("%s %s: %v %+v", method, path, err, ae)
	}
}

func (c *client) login(dir string) {
	c.t.Helper()
	pw, err := os.ReadFile(filepath.Join(dir, "initial-admin-password"))
	if err != nil {
		c.t.Fatal(err)
	}
	var out loginResponse
	c.mustCall("POST", "/api/v1/login", loginRequest{User: "admin", Password: strings.TrimSpace(string(pw))}, &out)
	c.token = out.Token
}

func (c *client) newToken(req enrollmentTokenRequest) enrollmentTokenResponse {
	c.t.Helper()
	var out enrollmentTokenResponse
	c.mustCall("POST", "/api/v1/workspaces/default/enrollment-tokens", req, &out)
	return out
}

type enrollee struct {
	key *ecdsa.PrivateKey
	csr []byte
}

func newEnrollee(t testing.TB) enrollee {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return enrollee{key, csr}
}

func (c *client) enroll(e enrollee, token string) (enrollResponse, *apiErr) {
	c.t.Helper()
	var out enrollResponse
	ae, err := c.call("POST", "/api/v1/enroll", enrollRequest{Token: token, CSR: string(e.csr)}, &out)
	if err != nil {
		c.t.Fatalf("enroll: %v", err)
	}
	return out, ae
}

func TestEnrollHTTPS(t *testing.T) {
	dir := t.TempDir()
	s := startHub(t, testConfig(t, dir))
	c := newClient(t, s)
	c.login(dir)
	tok := c.newToken(enrollmentTokenRequest{Role: pki.RoleAgent, Labels: map[string]string{"env": "prod"}, TTL: "10m"})
	if tok.CAFingerprint != s.RootFingerprint() {
		t.Errorf("caFingerprint %s, root %s", tok.CAFingerprint, s.RootFingerprint())
	}
	res, ae := c.enroll(newEnrollee(t), tok.Token)
	if ae != nil {
		t.Fatalf("enroll: %+v", ae)
	}
	id, err := pki.ParseIdentity(res.Identity)
	if err != nil || id.Role != pki.RoleAgent || id.Workspace != "default" || id.TrustDomain != DefaultTrustDomain {
		t.Fatalf("identity %q: %v", res.Identity, err)
	}
	chain, err := pki.ParseCertsPEM([]byte(res.Certificate))
	if err != nil || len(chain) != 2 {
		t.Fatalf("chain: %d certificates, %v", len(chain), err)
	}
	if got, _ := pki.IdentityFromCert(chain[0]); got != id {
		t.Errorf("leaf identity %v, want %v", got, id)
	}
	a, err := s.Store().GetAgent(context.Background(), id.ID)
	if err != nil || a.Workspace != "default" || a.Labels["env"] != "prod" {
		t.Fatalf("agent record %+v, %v", a, err)
	}
	if root, _ := os.ReadFile(filepath.Join(dir, "ca", "root.pem")); !bytes.Equal(root, []byte(res.Root)) {
		t.Error("DATA_DIR/ca/root.pem differs from the root the hub returns")
	}
	if fi, err := os.Stat(filepath.Join(dir, "secret.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("generated secret.key: %v, %v", fi.Mode(), err)
	}
}

// TestTokenSingleUseAcrossHubs: two hubs on one PostgreSQL with one secret
// key; 20 redemptions of one token spread over both at once yield exactly
// one certificate.
func TestTokenSingleUseAcrossHubs(t *testing.T) {
	url := testenv.PostgresURL(t)
	key := strings.Repeat("ab", 32)
	var hubs []*Server
	var clients []*client
	for range 2 {
		cfg := testConfig(t, t.TempDir())
		cfg.DatabaseURL, cfg.SecretKey = url, key
		s := startHub(t, cfg)
		hubs = append(hubs, s)
		clients = append(clients, newClient(t, s))
	}
	if hubs[0].RootFingerprint() != hubs[1].RootFingerprint() {
		t.Fatal("the two hubs have different roots")
	}
	var admin *client
	for i, s := range hubs {
		if _, err := os.Stat(filepath.Join(s.cfg.DataDir, "initial-admin-password")); err == nil {
			admin = clients[i]
			admin.login(s.cfg.DataDir)
		}
	}
	if admin == nil {
		t.Fatal("neither hub wrote initial-admin-password")
	}
	tok := admin.newToken(enrollmentTokenRequest{Role: pki.RoleAgent, TTL: "5m"})

	const n = 20
	es := make([]enrollee, n)
	for i := range es {
		es[i] = newEnrollee(t)
	}
	var wg sync.WaitGroup
	results := make([]*apiErr, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, results[i] = clients[i%2].enroll(es[i], tok.Token)
		}()
	}
	close(start)
	wg.Wait()
	ok, used := 0, 0
	for i, ae := range results {
		switch {
		case ae == nil:
			ok++
		case ae.Code == "token_used" && ae.Status == http.StatusUnauthorized:
			used++
		default:
			t.Errorf("redemption %d: %+v", i, ae)
		}
	}
	if ok != 1 || used != n-1 {
		t.Fatalf("%d succeeded, %d refused as token_used; want 1 and %d", ok, used, n-1)
	}
}

func TestRestartKeepsRoot(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	fp := s.RootFingerprint()
	pw, _ := os.ReadFile(filepath.Join(dir, "initial-admin-password"))
	s.Close()
	s2, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer s2.Close()
	if s2.RootFingerprint() != fp {
		t.Fatalf("root changed across a restart: %s then %s", fp, s2.RootFingerprint())
	}
	if pw2, _ := os.ReadFile(filepath.Join(dir, "initial-admin-password")); !bytes.Equal(pw, pw2) {
		t.Error("a restart rewrote the initial admin password")
	}
}

// snapshot returns the data directory's files and contents, except
// SQLite's WAL side files, which merely opening the database touches.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "-wal") || strings.HasSuffix(p, "-shm") {
			return err
		}
		b, _ := os.ReadFile(p)
		fi, _ := d.Info()
		out[p] = fi.Mode().String() + string(b)
		return nil
	})
	return out
}

func TestWrongSecretKeyChangesNothing(t *testing.T) {
	ctx := context.Background()
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir)
			cfg.SecretKey = strings.Repeat("11", 32)
			if backend == "postgres" {
				cfg.DatabaseURL = testenv.PostgresURL(t)
			}
			s, err := New(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			fp := s.RootFingerprint()
			sealed, _ := s.Store().GetCA(ctx)
			s.Close()
			before := snapshot(t, dir)

			wrong := cfg
			wrong.SecretKey = strings.Repeat("22", 32)
			_, err = New(ctx, wrong)
			if !errors.Is(err, ca.ErrWrongKey) || !strings.Contains(err.Error(), "secret key") {
				t.Fatalf("New with the wrong key: %v; want a clear ErrWrongKey", err)
			}
			// Given no key at all while the database has a CA: refused too,
			// and no key file is generated.
			none := cfg
			none.SecretKey = ""
			if _, err := New(ctx, none); err == nil || !strings.Contains(err.Error(), "no secret key was given") {
				t.Fatalf("New without a key: %v", err)
			}
			after := snapshot(t, dir)
			if len(before) != len(after) {
				t.Fatalf("data dir changed: %d files before, %d after", len(before), len(after))
			}
			for p, v := range before {
				if after[p] != v {
					t.Errorf("%s changed", p)
				}
			}
			s, err = New(ctx, cfg)
			if err != nil {
				t.Fatalf("right key after wrong: %v", err)
			}
			defer s.Close()
			sealed2, _ := s.Store().GetCA(ctx)
			if s.RootFingerprint() != fp || !bytes.Equal(sealed, sealed2) {
				t.Fatal("the CA in the database changed")
			}
		})
	}
}

func TestSecretKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	kf := filepath.Join(dir, "kek")
	if err := os.WriteFile(kf, []byte(strings.Repeat("33", 32)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, filepath.Join(dir, "data"))
	cfg.SecretKeyFile = kf
	if _, err := New(context.Background(), cfg); !errors.Is(err, pki.ErrKeyPermissions) {
		t.Fatalf("key file mode 0644: %v, want ErrKeyPermissions", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "nxmesh.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused start created the database: %v", err)
	}
	os.Chmod(kf, 0o600)
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
}

// TestTokenRefusals: each reason a token is refused has its own code.
func TestTokenRefusals(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{}
	cfg := testConfig(t, dir)
	cfg.Clock = clk.Now
	s := startHub(t, cfg)
	c := newClient(t, s)
	c.login(dir)

	other := startHub(t, testConfig(t, t.TempDir())) // another installation's CA
	oc := newClient(t, other)
	oc.login(other.cfg.DataDir)
	foreign := oc.newToken(enrollmentTokenRequest{Role: pki.RoleAgent}).Token

	used := c.newToken(enrollmentTokenRequest{Role: pki.RoleAgent}).Token
	if _, ae := c.enroll(newEnrollee(t), used); ae != nil {
		t.Fatalf("first use: %+v", ae)
	}
	expired := c.newToken(enrollmentTokenRequest{Role: pki.RoleAgent, TTL: "1m"}).Token
	clk.Advance(2 * time.Minute)

	for _, tc := range []struct {
		name, token, code string
		status            int
	}{
		{"reused", used, "token_used", 401},
		{"expired", expired, "token_expired", 401},
		{"malformed", "not.a.jwt", "token_malformed", 400},
		{"foreign", foreign, "token_foreign", 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ae := c.enroll(newEnrollee(t), tc.token)
			if ae == nil || ae.Code != tc.code || ae.Status != tc.status || ae.Field != "token" {
				t.Fatalf("got %+v, want %d %s", ae, tc.status, tc.code)
			}
		})
	}
	// The expired token was refused before it was consumed: back inside
	// its lifetime, it still redeems.
	clk.Advance(-2 * time.Minute)
	if _, ae := c.enroll(newEnrollee(t), expired); ae != nil {
		t.Fatalf("expired token burned its use: %+v", ae)
	}
}

func TestUnauthenticated(t *testing.T) {
	dir := t.TempDir()
	s := startHub(t, testConfig(t, dir))
	c := newClient(t, s)
	for _, tc := range []struct{ name, token, method, path string }{
		{"no token", "", "POST", "/api/v1/workspaces/default/enrollment-tokens"},
		{"bad token", "nxs_nope", "POST", "/api/v1/workspaces/default/enrollment-tokens"},
		{"delete agent", "", "DELETE", "/api/v1/workspaces/default/agents/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.token = tc.token
			ae, err := c.call(tc.method, tc.path, enrollmentTokenRequest{Role: pki.RoleAgent}, nil)
			if err != nil || ae == nil || ae.Status != http.StatusUnauthorized || ae.Code != "unauthenticated" {
				t.Fatalf("got %+v, %v; want 401 unauthenticated", ae, err)
			}
		})
	}
	c.token = ""
	ae, _ := c.call("POST", "/api/v1/login", loginRequest{User: "admin", Password: "wrong"}, nil)
	if ae == nil || ae.Status != 401 || ae.Code != "invalid_credentials" {
		t.Fatalf("wrong password: %+v", ae)
	}
	c.login(dir)
	for _, tc := range []struct {
		name  string
		req   enrollmentTokenRequest
		field string
	}{
		{"bad ttl", enrollmentTokenRequest{Role: pki.RoleAgent, TTL: "soon"}, "ttl"},
		{"bad role", enrollmentTokenRequest{Role: "hub"}, "role"},
		{"bad uses", enrollmentTokenRequest{Role: pki.RoleAgent, Uses: -1}, "uses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ae, err := c.call("POST", "/api/v1/workspaces/default/enrollment-tokens", tc.req, nil)
			if err != nil || ae == nil || ae.Status != 400 || ae.Field != tc.field {
				t.Fatalf("got %+v, %v; want 400 on %s", ae, err, tc.field)
			}
		})
	}
	ae, _ = c.call("POST", "/api/v1/workspaces/nope/enrollment-tokens", enrollmentTokenRequest{Role: pki.RoleAgent}, nil)
	if ae == nil || ae.Status != 404 {
		t.Fatalf("unknown workspace: %+v", ae)
	}
}

func TestRenewAndRevoke(t *testing.T) {
	dir := t.TempDir()
	s := startHub(t, testConfig(t, dir))
	c := newClient(t, s)
	c.login(dir)
	e := newEnrollee(t)
	res, ae := c.enroll(e, c.newToken(enrollmentTokenRequest{Role: pki.RoleAgent}).Token)
	if ae != nil {
		t.Fatal(ae)
	}
	chain, _ := pki.ParseCertsPEM([]byte(res.Certificate))
	cert, err := pki.NewCertificate(e.key, chain)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.RootPEM())
	renewFunc := pki.HTTPSRenewFunc(s.AgentURL(), pki.Peer{TrustDomain: DefaultTrustDomain, Roots: pool})
	renew := func(cert tls.Certificate) ([]*x509.Certificate, error) {
		return renewFunc(context.Background(), cert)
	}
	newChain, err := renew(cert)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if len(newChain) != 2 || newChain[0].SerialNumber.Cmp(chain[0].SerialNumber) == 0 {
		t.Fatal("renewal returned no new certificate")
	}
	if id, _ := pki.IdentityFromCert(newChain[0]); id.String() != res.Identity {
		t.Fatalf("renewed identity %v, want %s", id, res.Identity)
	}
	renewed, err := pki.NewCertificate(e.key, newChain)
	if err != nil {
		t.Fatal(err)
	}

	id, _ := pki.ParseIdentity(res.Identity)
	c.mustCall("DELETE", "/api/v1/workspaces/default/agents/"+id.ID, nil, nil)
	for name, crt := range map[string]tls.Certificate{"original": cert, "renewed": renewed} {
		if _, err := renew(crt); err == nil {
			t.Errorf("renewal with the %s certificate of a deleted agent succeeded", name)
		}
	}
	if _, err := s.Store().GetAgent(context.Background(), id.ID); err == nil {
		t.Error("agent still recorded after DELETE")
	}
}

// BenchmarkEnrollHTTPS measures enrollments over HTTPS against a hub on
// SQLite: CSR upload, token check and consumption, signing, agent record.
// Minting the tokens and generating keys are outside the timing.
func BenchmarkEnrollHTTPS(b *testing.B) {
	dir := b.TempDir()
	s := startHub(b, testConfig(b, dir))
	c := newClient(b, s)
	c.login(dir)
	tok := c.newToken(enrollmentTokenRequest{Role: pki.RoleAgent, Uses: b.N, TTL: "1h"}).Token
	es := make([]enrollee, b.N)
	for i := range es {
		es[i] = newEnrollee(b)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, ae := c.enroll(es[i], tok); ae != nil {
			b.Fatal(ae)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "enrollments/s")
}
