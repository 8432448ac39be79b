package pki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"
)

func TestParseIdentity(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Identity
		ok   bool
	}{
		{"agent", "spiffe://mesh.test/ws/ws-a/agent/0b9c", Identity{"mesh.test", RoleAgent, "ws-a", "0b9c"}, true},
		{"relay", "spiffe://mesh.test/relay/r1", Identity{"mesh.test", RoleRelay, "", "r1"}, true},
		{"hub", "spiffe://mesh.test/hub/h1", Identity{"mesh.test", RoleHub, "", "h1"}, true},
		{"scheme", "https://mesh.test/hub/h1", Identity{}, false},
		{"port", "spiffe://mesh.test:443/hub/h1", Identity{}, false},
		{"user", "spiffe://u@mesh.test/hub/h1", Identity{}, false},
		{"query", "spiffe://mesh.test/hub/h1?x=1", Identity{}, false},
		{"fragment", "spiffe://mesh.test/hub/h1#x", Identity{}, false},
		{"upper td", "spiffe://Mesh.test/hub/h1", Identity{}, false},
		{"escaped", "spiffe://mesh.test/hub/h%2F1", Identity{}, false},
		{"dotdot", "spiffe://mesh.test/hub/..", Identity{}, false},
		{"trailing slash", "spiffe://mesh.test/hub/h1/", Identity{}, false},
		{"agent without ws", "spiffe://mesh.test/agent/a1", Identity{}, false},
		{"relay in ws", "spiffe://mesh.test/ws/a/relay/r1", Identity{}, false},
		{"empty id", "spiffe://mesh.test/hub/", Identity{}, false},
		{"unknown role", "spiffe://mesh.test/admin/x", Identity{}, false},
		{"empty", "", Identity{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseIdentity(tc.in)
			if tc.ok != (err == nil) {
				t.Fatalf("ParseIdentity(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if !tc.ok {
				if !errors.Is(err, ErrInvalidIdentity) {
					t.Fatalf("error %v does not wrap ErrInvalidIdentity", err)
				}
				return
			}
			if got != tc.want || got.String() != tc.in || got.URI().String() != tc.in {
				t.Fatalf("got %+v (%s), want %+v", got, got, tc.want)
			}
		})
	}
}

func FuzzParseIdentity(f *testing.F) {
	f.Add("spiffe://mesh.test/ws/ws-a/agent/0b9c")
	f.Add("spiffe://mesh.test/relay/r1")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			return
		}
		again, err := ParseIdentity(id.String())
		if err != nil || again != id {
			t.Fatalf("round trip of %q: %v %v", s, again, err)
		}
	})
}

// selfSigned makes a leaf for tests that do not need a CA.
func selfSigned(t *testing.T, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{TrustDomain: "mesh.test", Role: RoleAgent, Workspace: "w", ID: "a"}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "a"},
		NotBefore: notBefore, NotAfter: notAfter, URIs: []*url.URL{id.URI()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	c, err := NewCertificate(key, []*x509.Certificate{leaf})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFilesRoundTripAndKeyPermissions(t *testing.T) {
	now := time.Now()
	cert := selfSigned(t, now, now.Add(time.Hour))
	f := Files{Dir: t.TempDir(), Role: RoleAgent}
	if err := f.WriteKey(cert.PrivateKey.(crypto.Signer)); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteChain([]*x509.Certificate{cert.Leaf}, cert.Leaf); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(f.KeyPath())
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %04o", st.Mode().Perm())
	}
	got, err := f.LoadKeyPair()
	if err != nil || !got.Leaf.Equal(cert.Leaf) {
		t.Fatalf("load: %v", err)
	}
	if _, err := f.LoadRoot(Fingerprint(cert.Leaf)); err != nil {
		t.Fatalf("pinned root: %v", err)
	}
	// Another pin: the right one with its first digit changed (a fixed
	// "00" prefix would be the right pin for one key in 256).
	pin := Fingerprint(cert.Leaf)
	other := "1"
	if pin[0] == '1' {
		other = "2"
	}
	if _, err := f.LoadRoot(other + pin[1:]); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("wrong pin: %v", err)
	}
	os.Chmod(f.KeyPath(), 0o640)
	if _, err := f.LoadKeyPair(); !errors.Is(err, ErrKeyPermissions) {
		t.Fatalf("group-readable key: %v", err)
	}
}

// fakeClock is a manual clock for the Renewer: timers fire on Advance.
type fakeClock struct {
	mu      sync.Mutex // guards now and waiters
	now     time.Time
	waiters []fakeTimer
	added   chan struct{} // signalled when After is called
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, added: make(chan struct{}, 100)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeTimer{c.now.Add(d), ch})
	c.added <- struct{}{}
	return ch
}

// waitTimer blocks until the code under test has called After.
func (c *fakeClock) waitTimer(t *testing.T) time.Time {
	t.Helper()
	select {
	case <-c.added:
	case <-time.After(5 * time.Second):
		t.Fatal("renewer never waited")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiters[len(c.waiters)-1].at
}

func (c *fakeClock) Set(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = now
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(now) {
			w.ch <- now
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
}

func TestRenewerSchedulesAtTwoThirdsAndBacksOff(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(start)
	cur := selfSigned(t, start, start.Add(30*time.Second))
	src, _ := NewSource(cur)

	calls := make(chan struct{}, 10)
	var mu sync.Mutex
	fail := 2 // the first two attempts fail
	renew := func(_ context.Context, c tls.Certificate) ([]*x509.Certificate, error) {
		calls <- struct{}{}
		mu.Lock()
		defer mu.Unlock()
		if fail > 0 {
			fail--
			return nil, errors.New("hub unreachable")
		}
		n := clock.Now()
		// Re-sign for the same key as the current certificate.
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: n, NotAfter: n.Add(30 * time.Second), URIs: c.Leaf.URIs}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, c.Leaf.PublicKey, c.PrivateKey)
		if err != nil {
			return nil, err
		}
		leaf, err := x509.ParseCertificate(der)
		return []*x509.Certificate{leaf}, err
	}
	r := &Renewer{Source: src, Renew: renew, Clock: clock, MinBackoff: time.Second, MaxBackoff: 4 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	if at := clock.waitTimer(t); !at.Equal(start.Add(20 * time.Second)) {
		t.Fatalf("first renewal at %s, want two thirds (20s)", at.Sub(start))
	}
	clock.Set(start.Add(20 * time.Second))
	<-calls
	at := clock.waitTimer(t) // backoff 1: [0.5s, 1s]
	if d := at.Sub(start.Add(20 * time.Second)); d < 500*time.Millisecond || d > time.Second {
		t.Fatalf("first backoff %s", d)
	}
	clock.Set(at)
	<-calls
	at2 := clock.waitTimer(t) // backoff 2: [1s, 2s]
	if d := at2.Sub(at); d < time.Second || d > 2*time.Second {
		t.Fatalf("second backoff %s", d)
	}
	clock.Set(at2)
	<-calls
	next := clock.waitTimer(t)
	if src.Current().Leaf.NotAfter.Equal(cur.Leaf.NotAfter) {
		t.Fatal("source not swapped after a successful renewal")
	}
	if want := RenewAt(src.Current().Leaf, at2); !next.Equal(want) {
		t.Fatalf("next renewal %s, want %s", next, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

func TestRenewerStopsWithErrExpired(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := newFakeClock(start.Add(time.Hour))
	src, _ := NewSource(selfSigned(t, start, start.Add(time.Minute)))
	r := &Renewer{Source: src, Clock: clock, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Renew: func(context.Context, tls.Certificate) ([]*x509.Certificate, error) { return nil, errors.New("unused") }}
	err := r.Run(context.Background())
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("got %v, want ErrExpired", err)
	}
}

func TestRenewAtBackdatedShortCert(t *testing.T) {
	now := time.Now()
	leaf := &x509.Certificate{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(10 * time.Second)}
	at := RenewAt(leaf, now)
	if !at.After(now) || !at.Before(leaf.NotAfter) {
		t.Fatalf("renew at %s, now %s, expiry %s", at, now, leaf.NotAfter)
	}
}

// TestWriteRenewed: a renewed chain written through Files is what the next
// start loads, with the unchanged key.
func TestWriteRenewed(t *testing.T) {
	now := time.Now()
	cert := selfSigned(t, now, now.Add(time.Hour))
	f := Files{Dir: t.TempDir(), Role: RoleRelay}
	if err := f.WriteKey(cert.PrivateKey.(crypto.Signer)); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteChain([]*x509.Certificate{cert.Leaf}, cert.Leaf); err != nil {
		t.Fatal(err)
	}
	tmpl := *cert.Leaf
	tmpl.SerialNumber = new(big.Int).Add(cert.Leaf.SerialNumber, big.NewInt(1))
	tmpl.NotAfter = now.Add(2 * time.Hour)
	key := cert.PrivateKey.(crypto.Signer)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	renewed := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	if err := f.WriteRenewed(renewed); err != nil {
		t.Fatal(err)
	}
	got, err := f.LoadKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	if got.Leaf.SerialNumber.Cmp(tmpl.SerialNumber) != 0 {
		t.Fatalf("loaded serial %v, want the renewed %v", got.Leaf.SerialNumber, tmpl.SerialNumber)
	}
	if _, err := f.LoadRoot(Fingerprint(cert.Leaf)); err != nil {
		t.Fatalf("root changed by a renewal: %v", err)
	}
	if err := f.WriteRenewed(tls.Certificate{Certificate: [][]byte{[]byte("junk")}}); err == nil {
		t.Fatal("WriteRenewed accepted a malformed certificate")
	}
}
