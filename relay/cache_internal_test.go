package relay

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
)

// The desired map is written without encoding/json; it must read back as
// encoding/json reads it, whatever the agent ids hold.
func TestDesiredJSONReadsBack(t *testing.T) {
	checkReadsBack(t, map[string]string{
		"agent-1":          "3f0c",
		"web.eu-1:a_b":     "",
		`quote"back\slash`: "x",
		`quote"only`:       `back\slash`,
		"tab\tnew\nline":   "\u2028",
		"<script>&amp;</>": "ünïcode",
		"\x00\x7f\xff":     "invalid utf-8 \xfe",
		"":                 "empty id",
	})
	checkReadsBack(t, map[string]string{})
}

func FuzzDesiredJSON(f *testing.F) {
	f.Add("agent-1", "3f0c", "b", "")
	f.Add(`a"\`, "\x00", "<>&", "\u2028\xff")
	f.Add("\xff", "1", "\xfe", "2") // two ids that read back as one
	f.Fuzz(func(t *testing.T, id1, hash1, id2, hash2 string) {
		checkReadsBack(t, map[string]string{id1: hash1, id2: hash2})
	})
}

// checkReadsBack decodes appendDesiredJSON(m) pair by pair with
// encoding/json's decoder and expects each entry of m, as encoding/json
// writes and reads strings (invalid UTF-8 becomes U+FFFD). Pairs, not a
// map: two ids can read back as one, and then which wins is m's order.
func checkReadsBack(t *testing.T, m map[string]string) {
	t.Helper()
	data := appendDesiredJSON(nil, m)
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("%q: opens with %v, %v", data, tok, err)
	}
	var got [][2]string
	for dec.More() {
		var pair [2]string
		key, err := dec.Token()
		if err != nil {
			t.Fatalf("%q: key: %v", data, err)
		}
		pair[0], _ = key.(string)
		if err := dec.Decode(&pair[1]); err != nil {
			t.Fatalf("%q: value of %q: %v", data, pair[0], err)
		}
		got = append(got, pair)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		t.Fatalf("%q: closes with %v, %v", data, tok, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Fatalf("%q: data after the object", data)
	}
	var want [][2]string
	for k, v := range m {
		want = append(want, [2]string{jsonRoundTrip(t, k), jsonRoundTrip(t, v)})
	}
	cmp := func(a, b [2]string) int { return strings.Compare(a[0]+"\x00"+a[1], b[0]+"\x00"+b[1]) }
	slices.SortFunc(got, cmp)
	slices.SortFunc(want, cmp)
	if !slices.Equal(got, want) {
		t.Fatalf("%q read back as %q, want %q", data, got, want)
	}
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
		s.desiredChangedLocked(at)
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
