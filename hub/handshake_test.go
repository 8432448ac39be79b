package hub

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// TestAgentListenerLimitsHandshakes: the hub's agent listener admits TLS
// handshakes as a relay's does. While a silent connection holds the only
// slot, a client's handshake gets no answer; once it goes, the handshake
// is answered.
func TestAgentListenerLimitsHandshakes(t *testing.T) {
	cfg := testConfig(t, t.TempDir())
	cfg.MaxHandshakes = 1
	s := startHub(t, cfg)
	addr := s.agentLn.Addr().String()

	// handshake runs a TLS handshake with the agent listener, bounded by
	// d. The client has no certificate: the hub refuses it, but answers.
	handshake := func(d time.Duration) error {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(d)); err != nil {
			t.Fatal(err)
		}
		return tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).Handshake()
	}
	timedOut := func(err error) bool {
		var ne net.Error
		return errors.As(err, &ne) && ne.Timeout()
	}

	if err := handshake(10 * time.Second); timedOut(err) {
		t.Fatalf("handshake with every slot free: %v", err)
	}
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() }) // before the hub stops, should the test fail
	// The silent connection was accepted first and holds the slot until
	// it closes (or the listener's 10 s header timeout ends it).
	if err := handshake(time.Second); !timedOut(err) {
		t.Fatalf("handshake while a silent connection holds the only slot: %v; want no answer", err)
	}
	silent.Close()
	if err := handshake(10 * time.Second); timedOut(err) {
		t.Fatalf("handshake once the slot is free: %v", err)
	}
}
