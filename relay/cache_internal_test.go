package relay

import (
	"encoding/json"
	"log/slog"
	"maps"
	"testing"
	"time"
)

// The desired map is written without encoding/json; it must read back as
// encoding/json reads it, whatever the agent ids hold.
func TestDesiredJSONReadsBack(t *testing.T) {
	desired := map[string]string{
		"agent-1":          "3f0c",
		"web.eu-1:a_b":     "",
		`quote"back\slash`: "x",
		"tab\tnew\nline":   "\u2028",
		"<script>&amp;</>": "ünïcode",
		"\x00\x7f\xff":     "invalid utf-8 \xfe",
		"":                 "empty id",
	}
	check := func(m map[string]string) {
		t.Helper()
		var got map[string]string
		if err := json.Unmarshal(appendDesiredJSON(nil, m), &got); err != nil {
			t.Fatalf("reading back %q: %v", m, err)
		}
		want := map[string]string{}
		for k, v := range m { // encoding/json turns invalid UTF-8 into U+FFFD both ways
			want[jsonRoundTrip(t, k)] = jsonRoundTrip(t, v)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("read back %q, want %q", got, want)
		}
	}
	check(desired)
	check(map[string]string{})
}

func jsonRoundTrip(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func FuzzDesiredJSON(f *testing.F) {
	f.Add("agent-1", "3f0c", "b", "")
	f.Add(`a"\`, "\x00", "<>&", "\u2028\xff")
	f.Fuzz(func(t *testing.T, id1, hash1, id2, hash2 string) {
		if id1 != id2 && jsonRoundTrip(t, id1) == jsonRoundTrip(t, id2) {
			t.Skip("two invalid UTF-8 ids read back as one; which wins is the map's order")
		}
		m := map[string]string{id1: hash1, id2: hash2}
		var got map[string]string
		if err := json.Unmarshal(appendDesiredJSON(nil, m), &got); err != nil {
			t.Fatalf("reading back %q: %v", m, err)
		}
		want := map[string]string{}
		for k, v := range m {
			want[jsonRoundTrip(t, k)] = jsonRoundTrip(t, v)
		}
		if !maps.Equal(got, want) {
			t.Fatalf("read back %q, want %q", got, want)
		}
	})
}

// TestDesiredPersistedOnceSettled: the desired map is written once it has
// stayed unchanged for desiredPersistQuiet, or desiredPersistMax after the
// first change not yet written however often it changes, and at once when
// the relay stops (a zero time).
func TestDesiredPersistedOnceSettled(t *testing.T) {
	c, err := openCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cache: c, log: slog.New(slog.DiscardHandler), desired: map[string]string{}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	change := func(at time.Time, hash string) {
		s.desired["agent-1"] = hash
		s.desiredChanged = at
		if !s.desiredDirty {
			s.desiredDirty, s.desiredDirtySince = true, at
		}
	}
	written := func() string {
		t.Helper()
		m, err := c.loadDesired()
		if err != nil {
			t.Fatal(err)
		}
		return m["agent-1"]
	}
	change(t0, "a")
	s.writeDesiredIfDirty(t0.Add(desiredPersistQuiet - time.Millisecond))
	if got := written(); got != "" {
		t.Fatalf("written before it settled: %q", got)
	}
	s.writeDesiredIfDirty(t0.Add(desiredPersistQuiet))
	if got := written(); got != "a" {
		t.Fatalf("settled for desiredPersistQuiet: written %q, want a", got)
	}
	// Changing every half second, it is written desiredPersistMax after
	// its first change.
	t1 := t0.Add(time.Minute)
	for i := range 11 { // the last at desiredPersistMax
		at := t1.Add(time.Duration(i) * desiredPersistQuiet / 2)
		change(at, string(rune('b'+i)))
		s.writeDesiredIfDirty(at)
		want := "a"
		if at.Sub(t1) >= desiredPersistMax {
			want = string(rune('b' + i))
		}
		if got := written(); got != want {
			t.Fatalf("%v after the first change: written %q, want %q", at.Sub(t1), got, want)
		}
	}
	// The next change starts the count again.
	change(t1.Add(desiredPersistMax+desiredPersistQuiet/2), "y")
	s.writeDesiredIfDirty(t1.Add(desiredPersistMax + desiredPersistQuiet/2))
	if got := written(); got != "l" {
		t.Fatalf("a change right after a write: written %q, want l (not yet y)", got)
	}
	change(t1.Add(time.Hour), "z")
	s.writeDesiredIfDirty(time.Time{})
	if got := written(); got != "z" {
		t.Fatalf("on stopping: written %q, want z", got)
	}
}
