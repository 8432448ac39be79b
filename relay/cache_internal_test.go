package relay

import (
	"encoding/json"
	"maps"
	"testing"
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
