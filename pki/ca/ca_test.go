package ca

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/pki"
)

// fakeClock is a settable clock anchored at real time (step-ca checks some
// bounds against time.Now, so the fake never strays far behind it).
type fakeClock struct{ off atomic.Int64 }

func (f *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(f.off.Load())) }
func (f *fakeClock) Advance(d time.Duration) { f.off.Add(int64(d)) }

const td = "mesh.test"

func testKEK(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openCA(t testing.TB, s Storage, clock *fakeClock, mod ...func(*Config)) *CA {
	t.Helper()
	cfg := Config{TrustDomain: td, Storage: s, KEK: testKEK(7), Logger: quietLogger()}
	if clock != nil {
		cfg.Clock = clock.Now
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open CA: %v", err)
	}
	return c
}

func mustToken(t testing.TB, c *CA, req TokenRequest) string {
	t.Helper()
	tok, err := c.NewEnrollmentToken(context.Background(), req)
	if err != nil {
		t.Fatalf("new token: %v", err)
	}
	return tok
}

func mustCSR(t testing.TB) []byte {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func agentToken(ws string) TokenRequest { return TokenRequest{Workspace: ws, Role: pki.RoleAgent} }

func TestEnrollChainVerifiesWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl not found: install the Debian package openssl (make test-deps does)")
	}
	c := openCA(t, newMemStore(), nil)
	iss, err := c.Enroll(context.Background(), mustToken(t, c, agentToken("ws-a")), mustCSR(t))
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := write("root.pem", c.RootPEM())
	inter := write("intermediate.pem", pki.EncodeCertsPEM(iss.Chain[1]))
	leaf := write("leaf.pem", pki.EncodeCertsPEM(iss.Leaf))
	out, err := exec.Command("openssl", "verify", "-CAfile", root, "-untrusted", inter, leaf).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	text, err := exec.Command("openssl", "x509", "-in", leaf, "-noout", "-ext", "subjectAltName").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl x509: %v\n%s", err, text)
	}
	want := "URI:spiffe://" + td + "/ws/ws-a/agent/" + iss.Identity.ID
	if !bytes.Contains(text, []byte(want)) {
		t.Fatalf("SAN %q does not contain %q", text, want)
	}
	if got, _ := pki.IdentityFromCert(iss.Leaf); got != iss.Identity {
		t.Fatalf("identity in cert %v, reported %v", got, iss.Identity)
	}
	if len(iss.Chain) != 2 || !iss.Chain[1].Equal(c.Intermediate()) {
		t.Fatalf("chain is not leaf then intermediate")
	}
}

func TestConcurrentRedemptionAcrossTwoHubs(t *testing.T) {
	store := newMemStore()
	hubs := []*CA{openCA(t, store, nil), openCA(t, store, nil)}
	if !hubs[0].Root().Equal(hubs[1].Root()) {
		t.Fatal("two hubs on one store have different roots")
	}
	tok := mustToken(t, hubs[0], agentToken("ws-a"))
	var ok, used atomic.Int32
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 20 {
		csr := mustCSR(t)
		wg.Go(func() {
			<-start
			_, err := hubs[i%2].Enroll(context.Background(), tok, csr)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrTokenUsed):
				used.Add(1)
			default:
				t.Errorf("enroll: unexpected error %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if ok.Load() != 1 || used.Load() != 19 {
		t.Fatalf("got %d certificates and %d 'used' refusals, want 1 and 19", ok.Load(), used.Load())
	}
}

func TestTwoHubsStartingAtOnceShareOneCA(t *testing.T) {
	store := newMemStore()
	roots := make([]*x509.Certificate, 4)
	var wg sync.WaitGroup
	for i := range roots {
		wg.Go(func() { roots[i] = openCA(t, store, nil).Root() })
	}
	wg.Wait()
	for _, r := range roots[1:] {
		if !r.Equal(roots[0]) {
			t.Fatal("concurrent first starts created more than one CA")
		}
	}
}

func TestWorkspaceBinding(t *testing.T) {
	c := openCA(t, newMemStore(), nil)
	for _, ws := range []string{"ws-a", "ws-b"} {
		iss, err := c.Enroll(context.Background(), mustToken(t, c, agentToken(ws)), mustCSR(t))
		if err != nil {
			t.Fatal(err)
		}
		if iss.Identity.Workspace != ws || iss.Leaf.URIs[0].String() != iss.Identity.String() {
			t.Fatalf("token for %s gave %s", ws, iss.Leaf.URIs[0])
		}
	}
	// A workspace-A token whose payload is edited to say B no longer verifies.
	tok := mustToken(t, c, agentToken("ws-a"))
	forged := editPayload(t, tok, "ws-a", "ws-b")
	if _, err := c.Enroll(context.Background(), forged, mustCSR(t)); !errors.Is(err, ErrTokenForeign) {
		t.Fatalf("edited token: got %v, want ErrTokenForeign", err)
	}
	// Relay tokens give relay identities with no workspace.
	iss, err := c.Enroll(context.Background(), mustToken(t, c, TokenRequest{Role: pki.RoleRelay}), mustCSR(t))
	if err != nil || iss.Identity.Role != pki.RoleRelay || iss.Identity.Workspace != "" {
		t.Fatalf("relay enroll: %v %v", iss, err)
	}
}

// editPayload rewrites a compact JWS payload, keeping the signature.
func editPayload(t *testing.T, tok, from, to string) string {
	t.Helper()
	parts := bytes.Split([]byte(tok), []byte("."))
	p, err := b64.DecodeString(string(parts[1]))
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = []byte(b64.EncodeToString(bytes.ReplaceAll(p, []byte(from), []byte(to))))
	return string(bytes.Join(parts, []byte(".")))
}

func TestCSRExtrasAreIgnored(t *testing.T) {
	c := openCA(t, newMemStore(), nil)
	key, _ := pki.GenerateKey()
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	evil, _ := url.Parse("spiffe://" + td + "/hub/evil")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "hub.evil"},
		DNSNames:       []string{"evil.example.com"},
		IPAddresses:    []net.IP{net.ParseIP("10.0.0.1")},
		EmailAddresses: []string{"a@evil.example.com"},
		URIs:           []*url.URL{evil},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	iss, err := c.Enroll(context.Background(), mustToken(t, c, agentToken("ws-a")), csr)
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	l := iss.Leaf
	if l.IsCA || len(l.DNSNames)+len(l.IPAddresses)+len(l.EmailAddresses) != 0 || len(l.URIs) != 1 {
		t.Fatalf("leaf kept CSR requests: ca=%v dns=%v ip=%v email=%v uris=%v", l.IsCA, l.DNSNames, l.IPAddresses, l.EmailAddresses, l.URIs)
	}
	if iss.Identity.Role != pki.RoleAgent || l.Subject.CommonName != iss.Identity.ID {
		t.Fatalf("identity %v, cn %q", iss.Identity, l.Subject.CommonName)
	}
	if l.KeyUsage != x509.KeyUsageDigitalSignature || len(l.ExtKeyUsage) != 2 {
		t.Fatalf("key usage %v ext %v", l.KeyUsage, l.ExtKeyUsage)
	}
	if life := l.NotAfter.Sub(l.NotBefore); life > 24*time.Hour+2*time.Minute {
		t.Fatalf("lifetime %s longer than configured", life)
	}
}

func TestTokenRefusalsAreDistinct(t *testing.T) {
	clock := &fakeClock{}
	c := openCA(t, newMemStore(), clock)
	other := openCA(t, newMemStore(), nil) // another installation, same trust domain name
	ctx := context.Background()

	used := mustToken(t, c, agentToken("ws-a"))
	if _, err := c.Enroll(ctx, used, mustCSR(t)); err != nil {
		t.Fatal(err)
	}
	expired := mustToken(t, c, TokenRequest{Workspace: "ws-a", Role: pki.RoleAgent, TTL: time.Minute})

	tests := []struct {
		name  string
		token func() string
		want  error
	}{
		{"reused", func() string { return used }, ErrTokenUsed},
		{"malformed", func() string { return "not.a.token" }, ErrTokenMalformed},
		{"garbage", func() string { return "" }, ErrTokenMalformed},
		{"foreign", func() string { return mustToken(t, other, agentToken("ws-a")) }, ErrTokenForeign},
		{"expired", func() string { clock.Advance(2 * time.Minute); return expired }, ErrTokenExpired},
	}
	seen := map[string]bool{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Enroll(ctx, tc.token(), mustCSR(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			seen[tc.want.Error()] = true
		})
	}
	if len(seen) != 4 {
		t.Fatalf("refusal messages are not distinct: %v", seen)
	}
	// The expired token was refused before it could use up its one use.
	clock.Advance(-2 * time.Minute)
	if _, err := c.Enroll(ctx, expired, mustCSR(t)); err != nil {
		t.Fatalf("expired check consumed the token: %v", err)
	}
}

func TestMultiUseTokenGivesDistinctIdentities(t *testing.T) {
	c := openCA(t, newMemStore(), nil)
	tok := mustToken(t, c, TokenRequest{Workspace: "ws-a", Role: pki.RoleAgent, Uses: 3, Labels: map[string]string{"env": "prod"}})
	ids := map[string]bool{}
	for range 3 {
		iss, err := c.Enroll(context.Background(), tok, mustCSR(t))
		if err != nil {
			t.Fatal(err)
		}
		if iss.Labels["env"] != "prod" {
			t.Fatalf("labels %v", iss.Labels)
		}
		ids[iss.Identity.ID] = true
	}
	if len(ids) != 3 {
		t.Fatalf("ids not distinct: %v", ids)
	}
	if _, err := c.Enroll(context.Background(), tok, mustCSR(t)); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("fourth use: %v", err)
	}
}

func TestCSRInvalid(t *testing.T) {
	c := openCA(t, newMemStore(), nil)
	csr := mustCSR(t)
	block, _ := pem.Decode(csr)
	block.Bytes[len(block.Bytes)-3] ^= 0xff // break the signature
	_, err := c.Enroll(context.Background(), mustToken(t, c, agentToken("ws-a")), pem.EncodeToMemory(block))
	if !errors.Is(err, ErrCSRInvalid) {
		t.Fatalf("got %v, want ErrCSRInvalid", err)
	}
}

func TestRenewRefusedWhenRevokedOrExpired(t *testing.T) {
	clock := &fakeClock{}
	c := openCA(t, newMemStore(), clock)
	ctx := context.Background()
	enroll := func() *Issued {
		iss, err := c.Enroll(ctx, mustToken(t, c, agentToken("ws-a")), mustCSR(t))
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	a := enroll()
	renewed, err := c.Renew(ctx, a.Leaf)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if renewed.Identity != a.Identity || renewed.Leaf.SerialNumber.Cmp(a.Leaf.SerialNumber) == 0 {
		t.Fatalf("renewal changed identity or kept serial")
	}
	if err := c.Revoke(ctx, a.Leaf.SerialNumber.String(), "agent deleted"); err != nil {
		t.Fatal(err)
	}
	if revoked, _ := c.IsRevoked(ctx, a.Leaf.SerialNumber.String()); !revoked {
		t.Fatal("IsRevoked false after Revoke")
	}
	if _, err := c.Renew(ctx, a.Leaf); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked renewal: got %v, want ErrRevoked", err)
	}
	b := enroll()
	clock.Advance(25 * time.Hour)
	if _, err := c.Renew(ctx, b.Leaf); !errors.Is(err, pki.ErrExpired) {
		t.Fatalf("expired renewal: got %v, want pki.ErrExpired", err)
	}
	foreign := openCA(t, newMemStore(), nil)
	f, err := foreign.Enroll(ctx, mustToken(t, foreign, agentToken("ws-a")), mustCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Renew(ctx, f.Leaf); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("foreign renewal: got %v", err)
	}
}

func TestReopenKeepsCA(t *testing.T) {
	store := newMemStore()
	a := openCA(t, store, nil)
	tok := mustToken(t, a, agentToken("ws-a")) // minted before the "restart"
	b := openCA(t, store, nil)
	if !a.Root().Equal(b.Root()) || a.Fingerprint() != b.Fingerprint() {
		t.Fatal("reopen changed the root")
	}
	if _, err := b.Enroll(context.Background(), tok, mustCSR(t)); err != nil {
		t.Fatalf("token minted before restart refused: %v", err)
	}
}

func TestWrongKEKRefusesAndTouchesNothing(t *testing.T) {
	store := newMemStore()
	openCA(t, store, nil)
	caBefore, tokBefore := store.snapshot()
	writes := store.writes.Load()
	_, err := Open(context.Background(), Config{TrustDomain: td, Storage: store, KEK: testKEK(9), Logger: quietLogger()})
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("got %v, want ErrWrongKey", err)
	}
	caAfter, tokAfter := store.snapshot()
	if store.writes.Load() != writes || !bytes.Equal(caBefore, caAfter) || len(tokBefore) != len(tokAfter) {
		t.Fatal("open with a wrong key wrote to the store")
	}
	if bytes.Contains([]byte(err.Error()), testKEK(9)) {
		t.Fatal("error leaks the key")
	}
}

func TestIssueHub(t *testing.T) {
	c := openCA(t, newMemStore(), nil)
	cert, err := c.IssueHub(context.Background(), "hub-1", []string{"hub.mesh.test", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.IdentityFromCert(cert.Leaf)
	if err != nil || id.Role != pki.RoleHub || id.ID != "hub-1" {
		t.Fatalf("hub identity %v %v", id, err)
	}
	if len(cert.Leaf.DNSNames) != 1 || len(cert.Leaf.IPAddresses) != 1 {
		t.Fatalf("hub SANs dns=%v ip=%v", cert.Leaf.DNSNames, cert.Leaf.IPAddresses)
	}
	if _, err := c.Renew(context.Background(), cert.Leaf); err != nil {
		t.Fatalf("hub renew: %v", err)
	}
}

func BenchmarkIssue(b *testing.B) {
	c := openCA(b, newMemStore(), nil)
	tok := mustToken(b, c, TokenRequest{Workspace: "ws-a", Role: pki.RoleAgent, Uses: 100000})
	csr := mustCSR(b)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Enroll(ctx, tok, csr); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "certs/s")
}
