package ca

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/pki"
)

// enrollSource enrolls a fresh key with a token for req and returns a Source.
func enrollSource(t *testing.T, c *CA, req TokenRequest) *pki.Source {
	t.Helper()
	key, _ := pki.GenerateKey()
	csr, _ := pki.NewCSR(key)
	iss, err := c.Enroll(context.Background(), mustToken(t, c, req), csr)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.NewCertificate(key, iss.Chain)
	if err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(cert)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// serve runs an echo-one-byte TLS server on loopback until the test ends.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				if err := conn.(*tls.Conn).Handshake(); err != nil {
					return
				}
				cs := conn.(*tls.Conn).ConnectionState()
				if _, err := pki.PeerIdentity(&cs); err != nil {
					return
				}
				conn.Write([]byte{1})
			})
		}
	})
	return ln.Addr().String()
}

// dial handshakes and reads the server's byte; an error means the server
// refused the client or the client refused the server.
func dial(addr string, cfg *tls.Config) (pki.Identity, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return pki.Identity{}, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		return pki.Identity{}, err
	}
	cs := conn.ConnectionState()
	return pki.PeerIdentity(&cs)
}

func hubServer(t *testing.T, c *CA, clock *fakeClock, roles ...pki.Role) (string, *pki.Source) {
	t.Helper()
	hub, err := c.IssueHub(context.Background(), "hub-1", []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	src, _ := pki.NewSource(hub)
	cfg, err := pki.ServerTLSConfig(src, pki.Peer{
		TrustDomain: td, Roots: c.Roots(), Roles: roles,
		IsRevoked: func(serial string) (bool, error) { return c.IsRevoked(context.Background(), serial) },
	})
	if clock != nil {
		cfg.Time = clock.Now
	}
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, cfg), src
}

func clientConfig(t *testing.T, c *CA, src *pki.Source) *tls.Config {
	t.Helper()
	cfg, err := pki.ClientTLSConfig(src, pki.Peer{TrustDomain: td, Roots: c.Roots(), Roles: []pki.Role{pki.RoleHub}})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestRenewalHasNoHandshakeGap(t *testing.T) {
	// 10-second certificates, real clock: TLS checks validity against real
	// time, so this is the one test that cannot use the fake clock.
	c := openCA(t, newMemStore(), nil, func(cfg *Config) {
		cfg.CertLifetime = 10 * time.Second
		cfg.Backdate = -1
	})
	addr, hubSrc := hubServer(t, c, nil, pki.RoleAgent)
	agentSrc := enrollSource(t, c, agentToken("ws-a"))
	ccfg := clientConfig(t, c, agentSrc)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var renewals atomic.Int32
	for _, src := range []*pki.Source{hubSrc, agentSrc} {
		r := &pki.Renewer{Source: src, Renew: c.RenewFunc(), Logger: quietLogger(),
			MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
			OnRenew: func(tls.Certificate) error { renewals.Add(1); return nil }}
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				t.Errorf("renewer: %v", err)
			}
		})
	}
	first := agentSrc.Current().Leaf.SerialNumber
	deadline := time.Now().Add(25 * time.Second)
	handshakes := 0
	for time.Now().Before(deadline) {
		id, err := dial(addr, ccfg)
		if err != nil {
			t.Fatalf("handshake %d failed after %d renewals: %v", handshakes, renewals.Load(), err)
		}
		if id.Role != pki.RoleHub {
			t.Fatalf("peer %v", id)
		}
		handshakes++
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if n := renewals.Load(); n < 4 { // at least two renewals each
		t.Fatalf("only %d renewals in 25s of 10s certificates", n)
	}
	if agentSrc.Current().Leaf.SerialNumber.Cmp(first) == 0 {
		t.Fatal("agent certificate never changed")
	}
	t.Logf("%d handshakes, %d renewals, no failure", handshakes, renewals.Load())
}

func TestTLSRefusals(t *testing.T) {
	clock := &fakeClock{}
	c := openCA(t, newMemStore(), clock)
	addr, _ := hubServer(t, c, clock, pki.RoleAgent) // agents only

	agent := enrollSource(t, c, agentToken("ws-a"))
	if id, err := dial(addr, clientConfig(t, c, agent)); err != nil || id.Role != pki.RoleHub {
		t.Fatalf("agent refused: %v %v", id, err)
	}

	relay := enrollSource(t, c, TokenRequest{Role: pki.RoleRelay})
	if _, err := dial(addr, clientConfig(t, c, relay)); err == nil {
		t.Fatal("relay accepted where an agent is required")
	}

	other := openCA(t, newMemStore(), nil)
	foreign := enrollSource(t, other, agentToken("ws-a"))
	if _, err := dial(addr, clientConfig(t, c, foreign)); err == nil {
		t.Fatal("foreign CA's agent accepted")
	}

	// A client that trusts the foreign root refuses our hub.
	fcfg, _ := pki.ClientTLSConfig(foreign, pki.Peer{TrustDomain: td, Roots: other.Roots(), Roles: []pki.Role{pki.RoleHub}})
	if _, err := dial(addr, fcfg); err == nil {
		t.Fatal("client accepted a hub from another CA")
	}

	// Revoked.
	rev := enrollSource(t, c, agentToken("ws-a"))
	if err := c.Revoke(context.Background(), rev.Current().Leaf.SerialNumber.String(), "deleted"); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(addr, clientConfig(t, c, rev)); err == nil {
		t.Fatal("revoked certificate accepted")
	}

	// Expired: the server's clock moves 25h on; the agent's 24h
	// certificate has expired for it.
	old := enrollSource(t, c, agentToken("ws-a"))
	clock.Advance(25 * time.Hour)
	if _, err := dial(addr, clientConfig(t, c, old)); err == nil {
		t.Fatal("expired certificate accepted")
	}
}

func TestPeerIdentityNeedsHandshake(t *testing.T) {
	if _, err := pki.PeerIdentity(&tls.ConnectionState{}); err == nil {
		t.Fatal("identity from an incomplete handshake")
	}
}

// TestResumedSessionChecksServer: a client resumes its session without
// verifying the server's chain again, but the identity rules still run on a
// resumed session (here: the server's certificate was revoked since), and
// an expired server certificate is refused.
func TestResumedSessionChecksServer(t *testing.T) {
	c := openCA(t, newMemStore(), nil)
	addr, hubSrc := hubServer(t, c, nil, pki.RoleAgent)
	agent := enrollSource(t, c, agentToken("ws-a"))
	clock := &fakeClock{}
	var revoked atomic.Bool
	cfg, err := pki.ClientTLSConfig(agent, pki.Peer{
		TrustDomain: td, Roots: c.Roots(), Roles: []pki.Role{pki.RoleHub}, Time: clock.Now,
		IsRevoked: func(string) (bool, error) { return revoked.Load(), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	resumed := func() (bool, error) {
		d := &net.Dialer{Timeout: 5 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
		if err != nil {
			return false, err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		// Reading the server's byte also reads its session ticket.
		if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
			return false, err
		}
		return conn.ConnectionState().DidResume, nil
	}
	for i, want := range []bool{false, true, true} {
		if got, err := resumed(); err != nil || got != want {
			t.Fatalf("dial %d: resumed %v, %v; want %v", i+1, got, err, want)
		}
	}
	revoked.Store(true)
	if _, err := resumed(); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("resumed a session with a revoked server: %v", err)
	}
	revoked.Store(false)
	if got, err := resumed(); err != nil || got {
		t.Fatalf("after a refusal: resumed %v, %v; want a full handshake", got, err)
	}
	clock.Advance(time.Until(hubSrc.Current().Leaf.NotAfter) + time.Minute)
	if _, err := resumed(); err == nil {
		t.Fatal("accepted a server whose certificate has expired")
	}
}
