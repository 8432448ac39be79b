package e2e_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/agent"
	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/pki"
	"github.com/nxmesh/nxmesh/relay"
)

// enrollHTTP enrolls over the API in this process (no CLI): a fresh key,
// its CSR and token in, the certificate chain out.
func enrollHTTP(t testing.TB, h *hubEnv, token string) tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		t.Fatal(err)
	}
	var res struct{ Certificate string }
	h.mustDo("POST", "/api/v1/enroll", map[string]string{"token": token, "csr": string(csr)}, &res)
	chain, err := pki.ParseCertsPEM([]byte(res.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.NewCertificate(key, chain)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// memAgent is an agent session with an in-memory applier: it "applies" a
// bundle by recording it and acks at once. NOT an nginx: the benchmark
// measures the control plane, and a thousand nginx do not fit here.
type memAgent struct {
	sess *agent.Session

	mu      sync.Mutex // guards live, at
	live    string
	at      time.Time
	changed chan struct{} // signalled on every apply (cap 1)
}

func (m *memAgent) Live() (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live, nil
}

func (m *memAgent) Submit(b *nginx.Bundle) {
	m.mu.Lock()
	m.live, m.at = b.Hash, time.Now()
	m.mu.Unlock()
	m.sess.Report(agent.Result{State: agent.Applied, Hash: b.Hash})
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

func (m *memAgent) state() (string, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.live, m.at
}

// memAgents enrolls n agents over the API and returns their sessions
// (not running) for relayURL.
func memAgents(t testing.TB, h *hubEnv, n int, relayURL string) []*memAgent {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.srv.RootPEM())
	var tok struct{ Token string }
	h.mustDo("POST", "/api/v1/workspaces/default/enrollment-tokens", map[string]any{"role": "agent", "uses": n}, &tok)
	agents := make([]*memAgent, n)
	for i := range agents {
		src, err := pki.NewSource(enrollHTTP(t, h, tok.Token))
		if err != nil {
			t.Fatal(err)
		}
		tlsCfg, err := pki.ClientTLSConfig(src, pki.Peer{TrustDomain: "nxmesh.local", Roots: roots, Roles: []pki.Role{pki.RoleRelay, pki.RoleHub}})
		if err != nil {
			t.Fatal(err)
		}
		m := &memAgent{changed: make(chan struct{}, 1)}
		m.sess = &agent.Session{Relays: []string{relayURL}, TLS: tlsCfg, Applier: m, Loop: m,
			MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second}
		agents[i] = m
	}
	return agents
}

// BenchmarkPush1000Agents: 1,000 agent sessions (real TLS, WebSockets and
// certificates, in-memory appliers) behind one relay; each iteration
// commits a change through the API and waits for the last ack. It reports
// commit-to-apply latency over all agents (p50, p99) and commit to the
// hub knowing every ack (last-ack).
func BenchmarkPush1000Agents(b *testing.B) {
	const n = 1000
	h := startHub(b, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The relay, in process.
	relayCert := enrollHTTP(b, h, h.enrollmentToken("relay", nil))
	src, err := pki.NewSource(relayCert)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.srv.RootPEM())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	rs, err := relay.New(relay.Config{Listener: ln, Hubs: []string{h.relayURL()}, StateDir: b.TempDir(), Source: src,
		TrustDomain: "nxmesh.local", Roots: roots, SendQueue: 16})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { _ = rs.Run(ctx) })
	relayURL := "wss://" + ln.Addr().String() + "/v1/agent"

	agents := memAgents(b, h, n, relayURL)
	for _, m := range agents {
		wg.Go(func() { _ = m.sess.Run(ctx) })
	}
	up := upstream(b, "ok")
	port := testenvPort(b)
	first := h.apply(site(port, up, "v0"))
	waitAll(b, agents, "", 60*time.Second)
	h.waitConverged(first.Revision, 30*time.Second)

	var perAgent, lastAck []time.Duration
	b.ResetTimer()
	for i := range b.N {
		prev, _ := agents[0].state()
		res := h.apply(site(port, up, fmt.Sprintf("v%d", i+1)))
		committed := time.Now()
		waitAll(b, agents, prev, 30*time.Second)
		for _, m := range agents {
			_, at := m.state()
			perAgent = append(perAgent, at.Sub(committed))
		}
		for !h.convergence(res.Revision).Done {
			time.Sleep(5 * time.Millisecond) // polling the API
		}
		lastAck = append(lastAck, time.Since(committed))
	}
	b.StopTimer()
	b.ReportMetric(ms(quantile(perAgent, 0.50)), "ms-apply-p50")
	b.ReportMetric(ms(quantile(perAgent, 0.99)), "ms-apply-p99")
	b.ReportMetric(ms(quantile(lastAck, 0.50)), "ms-last-ack-p50")
	b.ReportMetric(ms(quantile(lastAck, 0.99)), "ms-last-ack-p99")
}

// waitAll waits until every agent runs the same bundle, other than prev.
func waitAll(t testing.TB, agents []*memAgent, prev string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		want, _ := agents[0].state()
		done := want != prev
		for _, m := range agents {
			if h, _ := m.state(); h != want {
				done = false
				break
			}
		}
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents did not all apply a new bundle within %v", within)
		}
		time.Sleep(2 * time.Millisecond) // polling memory
	}
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(ds))
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
