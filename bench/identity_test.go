package bench

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/pki"
)

// testCA is a root and an intermediate that issue agent certificates the
// way the hub's CA does (URI SAN, leaf then intermediate).
type testCA struct {
	t          *testing.T
	root       *x509.Certificate
	inter      *x509.Certificate
	interKey   *ecdsa.PrivateKey
	serial     int64
	rootsPool  *x509.CertPool
	notBefore  time.Time
	caValidity time.Duration
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	ca := &testCA{t: t, notBefore: time.Now().Add(-time.Minute), caValidity: 365 * 24 * time.Hour}
	rootKey := ca.key()
	ca.root = ca.sign(&x509.Certificate{Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, nil, rootKey, rootKey, ca.caValidity)
	ca.interKey = ca.key()
	ca.inter = ca.sign(&x509.Certificate{Subject: pkix.Name{CommonName: "intermediate"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, ca.root, ca.interKey, rootKey, ca.caValidity)
	ca.rootsPool = x509.NewCertPool()
	ca.rootsPool.AddCert(ca.root)
	return ca
}

func (ca *testCA) key() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	return k
}

func (ca *testCA) sign(tmpl, parent *x509.Certificate, pub, signer *ecdsa.PrivateKey, life time.Duration) *x509.Certificate {
	ca.t.Helper()
	ca.serial++
	tmpl.SerialNumber = big.NewInt(ca.serial)
	tmpl.NotBefore, tmpl.NotAfter = ca.notBefore, time.Now().Add(life)
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &pub.PublicKey, signer)
	if err != nil {
		ca.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		ca.t.Fatal(err)
	}
	return c
}

// agent issues an agent identity valid for life.
func (ca *testCA) agent(id string, life time.Duration) identity {
	ca.t.Helper()
	key := ca.key()
	u, _ := url.Parse("spiffe://nxmesh.local/ws/default/agent/" + id)
	leaf := ca.sign(&x509.Certificate{URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}}, ca.inter, key, ca.interKey, life)
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	certs := []*x509.Certificate{leaf, ca.inter}
	id2, ok := newIdentity(key, certs, keyPEM, pki.EncodeCertsPEM(certs...))
	if !ok {
		ca.t.Fatalf("identity %s: not an agent certificate", id)
	}
	return id2
}

func TestIdentityCache(t *testing.T) {
	ca := newTestCA(t)
	path := filepath.Join(t.TempDir(), "agents.pem")
	fresh := []identity{ca.agent("a1", 24*time.Hour), ca.agent("a2", 24*time.Hour)}
	expiring := ca.agent("old", time.Hour) // below minCertLife
	if err := saveIdentities(path, append(fresh, expiring)); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file mode: %v, %v; want 0600 (it holds private keys)", fi.Mode(), err)
	}

	tests := []struct {
		name      string
		roots     *x509.CertPool
		wantIDs   []string
		wantStale int
	}{
		{"same hub", ca.rootsPool, []string{"a1", "a2"}, 1},
		{"another hub", newTestCA(t).rootsPool, nil, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, stale, err := loadIdentities(path, tc.roots)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, id := range ids {
				got = append(got, id.id)
				if id.cert.PrivateKey == nil || len(id.cert.Certificate) != 2 {
					t.Errorf("%s: key %v, chain of %d", id.id, id.cert.PrivateKey != nil, len(id.cert.Certificate))
				}
			}
			if len(got) != len(tc.wantIDs) || stale != tc.wantStale {
				t.Fatalf("loaded %v with %d stale, want %v with %d", got, stale, tc.wantIDs, tc.wantStale)
			}
			for i := range got {
				if got[i] != tc.wantIDs[i] {
					t.Errorf("identity %d = %s, want %s", i, got[i], tc.wantIDs[i])
				}
			}
		})
	}

	ids, stale, err := loadIdentities(filepath.Join(t.TempDir(), "none.pem"), ca.rootsPool)
	if err != nil || len(ids) != 0 || stale != 0 {
		t.Errorf("missing cache: %d identities, %d stale, %v; want none and no error", len(ids), stale, err)
	}
}

func TestBundleHash(t *testing.T) {
	type bundle struct {
		Hash  string
		Files []string
	}
	if got := bundleHash(&bundle{Hash: "abc"}); got != "abc" {
		t.Errorf("bundleHash(&bundle) = %q, want abc", got)
	}
	if got := bundleHash(42); got != "" {
		t.Errorf("bundleHash(42) = %q, want empty", got)
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSS <= 0 || s.CPU < 0 {
		t.Errorf("own process: RSS %d, CPU %v", s.RSS, s.CPU)
	}
	if _, err := readProc(0); err == nil {
		t.Error("readProc(0) succeeded")
	}
}

func TestSourceAddrSpreadsAgents(t *testing.T) {
	seen := map[string]int{}
	for i := range 9 {
		seen[sourceAddr(i, 3).String()]++
	}
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		if seen[ip] != 3 {
			t.Errorf("%s has %d of 9 agents, want 3 (all: %v)", ip, seen[ip], seen)
		}
	}
}

func TestIdentityRange(t *testing.T) {
	ca := newTestCA(t)
	path := filepath.Join(t.TempDir(), "agents.pem")
	ids := []identity{ca.agent("a0", 24*time.Hour), ca.agent("a1", 24*time.Hour), ca.agent("a2", 24*time.Hour), ca.agent("old", time.Hour)}
	if err := saveIdentities(path, ids); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		first, count int
		want         []string // nil: an error
	}{
		{"all fresh", 0, 3, []string{"a0", "a1", "a2"}},
		{"middle", 1, 1, []string{"a1"}},
		{"up to a stale entry", 2, 1, []string{"a2"}},
		{"through a stale entry", 2, 2, nil},
		{"past the end", 3, 2, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := loadIdentityRange(path, ca.rootsPool, tc.first, tc.count)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("loaded %d identities, want an error", len(got))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, id := range got {
				names = append(names, id.id)
			}
			if strings.Join(names, ",") != strings.Join(tc.want, ",") {
				t.Errorf("loaded %v, want %v", names, tc.want)
			}
		})
	}
}
