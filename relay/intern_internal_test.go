package relay

import (
	"strings"
	"testing"
	"unsafe"
)

// TestHashesShared: the relay keeps one copy of each wanted hash, hands it
// out for every copy a message brings, and forgets it with the last agent
// that wants it.
func TestHashesShared(t *testing.T) {
	s := &Server{desired: map[string]string{}, wanted: map[string]int{}, hashes: map[string]string{}}
	copyOf := func(h string) string { return strings.Clone(h) }
	h1, h2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
	same := func(a, b string) bool { return unsafe.StringData(a) == unsafe.StringData(b) }

	s.setDesiredLocked("agent-1", h1)
	s.setDesiredLocked("agent-2", copyOf(h1))
	if !same(s.desired["agent-1"], s.desired["agent-2"]) {
		t.Error("two agents wanting one hash hold two copies of it")
	}
	if got := s.internLocked(copyOf(h1)); got != h1 || !same(got, s.desired["agent-1"]) {
		t.Error("internLocked did not return the kept copy of a wanted hash")
	}
	if c := copyOf(h2); !same(s.internLocked(c), c) {
		t.Error("internLocked replaced a hash no agent wants")
	}
	s.setDesiredLocked("agent-1", h2)
	s.setDesiredLocked("agent-2", copyOf(h2))
	if _, ok := s.hashes[h1]; ok || len(s.hashes) != 1 || len(s.wanted) != 1 {
		t.Errorf("after every agent moved on: hashes %d, wanted %d; want only %s kept", len(s.hashes), len(s.wanted), h2[:8])
	}
}
