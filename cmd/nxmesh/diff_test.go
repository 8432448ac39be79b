package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

func lines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestLineDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{name: "equal", a: "a\nb", b: "a\nb", want: " a| b"},
		{name: "both empty", a: "", b: "", want: ""},
		{name: "all added", a: "", b: "a\nb", want: "+a|+b"},
		{name: "all removed", a: "a\nb", b: "", want: "-a|-b"},
		{name: "one changed", a: "a\nb\nc", b: "a\nB\nc", want: " a|-b|+B| c"},
		{name: "insert in middle", a: "a\nc", b: "a\nb\nc", want: " a|+b| c"},
		{name: "delete at end", a: "a\nb\nc", b: "a\nb", want: " a| b|-c"},
		{name: "moved line", a: "x\na\nb\nc", b: "a\nb\nc\nx", want: "-x| a| b| c|+x"},
		{name: "repeated lines", a: "a\na\nb", b: "a\nb\nb", want: " a|-a|+b| b"},
		{name: "no common line", a: "a\nb", b: "c\nd", want: "-a|-b|+c|+d"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(lineDiff(lines(tc.a), lines(tc.b)), "|")
			if got != tc.want {
				t.Errorf("lineDiff = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLineDiffReplays checks the promise on generated inputs: the kept and
// removed lines are a, the kept and added lines are b, and nothing is
// removed and added again that could have been kept at the same place.
func TestLineDiffReplays(t *testing.T) {
	words := []string{"a", "b", "c", "d"}
	for seed := 0; seed < 500; seed++ {
		a, b := genLines(seed, words), genLines(seed*7+3, words)
		script := lineDiff(a, b)
		var gotA, gotB []string
		for _, l := range script {
			if l[0] != '+' {
				gotA = append(gotA, l[1:])
			}
			if l[0] != '-' {
				gotB = append(gotB, l[1:])
			}
		}
		if !slices.Equal(gotA, a) || !slices.Equal(gotB, b) {
			t.Fatalf("seed %d: %q -> %q: script %q does not replay", seed, a, b, script)
		}
		kept := 0
		for _, l := range script {
			if l[0] == ' ' {
				kept++
			}
		}
		if want := lcsLen(a, b); kept != want {
			t.Fatalf("seed %d: %q -> %q keeps %d lines, the longest common subsequence has %d", seed, a, b, kept, want)
		}
	}
}

func genLines(seed int, words []string) []string {
	n := seed % 9
	out := make([]string, n)
	x := uint32(seed*2654435761 + 1)
	for i := range out {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		out[i] = words[x%uint32(len(words))]
	}
	return out
}

// lcsLen is the textbook recursion, as a reference.
func lcsLen(a, b []string) int {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	if a[0] == b[0] {
		return 1 + lcsLen(a[1:], b[1:])
	}
	return max(lcsLen(a[1:], b), lcsLen(a, b[1:]))
}

func TestLineDiffTooLarge(t *testing.T) {
	var a, b []string
	for i := range 3000 {
		a = append(a, "a"+strings.Repeat("x", i%7))
		b = append(b, "b"+strings.Repeat("x", i%7))
	}
	a = append([]string{"head"}, a...)
	b = append([]string{"head"}, b...)
	script := lineDiff(a, b)
	if len(script) != 1+6000 || script[0] != " head" || script[1] != "-a" || script[3001] != "+b" {
		t.Fatalf("a diff past the size limit should keep the common head and show the rest removed then added; got %d lines starting %q", len(script), script[:3])
	}
}

func TestUnifiedDiff(t *testing.T) {
	old := "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15"
	tests := []struct {
		name string
		a, b string
		want string
	}{
		{name: "one hunk", a: old, b: strings.Replace(old, "\n5\n", "\nfive\n", 1), want: `@@ -2,7 +2,7 @@
 2
 3
 4
-5
+five
 6
 7
 8`},
		{name: "two hunks", a: old, b: strings.Replace(strings.Replace(old, "2\n", "two\n", 1), "14\n", "", 1), want: `@@ -1,5 +1,5 @@
 1
-2
+two
 3
 4
 5
@@ -11,5 +11,4 @@
 11
 12
 13
-14
 15`},
		{name: "close changes share a hunk", a: old, b: strings.Replace(strings.Replace(old, "\n3\n", "\nthree\n", 1), "\n8\n", "\neight\n", 1), want: `@@ -1,11 +1,11 @@
 1
 2
-3
+three
 4
 5
 6
 7
-8
+eight
 9
 10
 11`},
		{name: "insert at start", a: "a\nb", b: "new\na\nb", want: "@@ -1,2 +1,3 @@\n+new\n a\n b"},
		{name: "empty old line numbers", a: "1\n2\n3\n4\n5", b: "1\n2\n3\n4\n5\n6", want: "@@ -3,3 +3,4 @@\n 3\n 4\n 5\n+6"},
		{name: "created", a: "", b: "kind: Upstream\nspec: {}", want: "+kind: Upstream\n+spec: {}"},
		{name: "removed", a: "kind: Upstream", b: "", want: "-kind: Upstream"},
		{name: "equal", a: "a\nb", b: "a\nb", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(unifiedDiff(lines(tc.a), lines(tc.b), 3), "\n")
			if got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestPrintChanges(t *testing.T) {
	up := func(addr string, version int) json.RawMessage {
		return json.RawMessage(`{"apiVersion":"nxmesh/v1","kind":"Upstream","metadata":{"name":"api","version":` +
			string(rune('0'+version)) + `,"createdAt":"2025-01-01T00:00:00Z","updatedAt":"2025-01-02T00:00:00Z"},"spec":{"servers":[{"address":"` + addr + `"}],"keepalive":16}}`)
	}
	cert := func(key string) json.RawMessage {
		return json.RawMessage(`{"apiVersion":"nxmesh/v1","kind":"Certificate","metadata":{"name":"shop"},"spec":{"certificate":"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n","privateKey":"` + key + `"}}`)
	}
	entries := []diffEntry{
		{Kind: "VirtualHost", Name: "shop", Op: opAdded, New: json.RawMessage(`{"apiVersion":"nxmesh/v1","kind":"VirtualHost","metadata":{"name":"shop","version":1},"spec":{"serverNames":["shop.example","8080"],"locations":[{"path":"/","upstream":"api"}]}}`)},
		{Kind: "Upstream", Name: "api", Op: opChanged, Old: up("10.0.0.1:80", 3), New: up("10.0.0.2:80", 4)},
		{Kind: "Certificate", Name: "shop", Op: opChanged, Old: cert(`-----BEGIN PRIVATE KEY-----\nsecret-one\n-----END PRIVATE KEY-----\n`), New: cert(`-----BEGIN PRIVATE KEY-----\nsecret-two\n-----END PRIVATE KEY-----\n`)},
		{Kind: "Upstream", Name: "old", Op: opRemoved, Old: json.RawMessage(`{"kind":"Upstream","metadata":{"name":"old"}}`), New: json.RawMessage(`null`)},
	}
	var buf bytes.Buffer
	if err := printPlan(&buf, entries); err != nil {
		t.Fatal(err)
	}
	got := buf.String()
	want := `+ VirtualHost shop (created)
    +apiVersion: nxmesh/v1
    +kind: VirtualHost
    +metadata:
    +  name: shop
    +spec:
    +  serverNames:
    +    - shop.example
    +    - "8080"
    +  locations:
    +    - path: /
    +      upstream: api

~ Upstream api (changed)
    @@ -4,5 +4,5 @@
       name: api
     spec:
       servers:
    -    - address: 10.0.0.1:80
    +    - address: 10.0.0.2:80
       keepalive: 16

~ Certificate shop (changed)
    @@ -7,4 +7,4 @@
         -----BEGIN CERTIFICATE-----
         MIIB
         -----END CERTIFICATE-----
    -  privateKey: (redacted, sha256 `
	if !strings.HasPrefix(got, want) {
		t.Fatalf("plan:\n%s\nwant it to start with\n%s", got, want)
	}
	for _, s := range []string{"secret-one", "secret-two", "version", "createdAt", "updatedAt"} {
		if strings.Contains(got, s) {
			t.Errorf("plan shows %q:\n%s", s, got)
		}
	}
	for _, s := range []string{"- Upstream old (removed)\n    -kind: Upstream\n", "\nPlan: 1 to create, 2 to change, 1 to remove.\n"} {
		if !strings.Contains(got, s) {
			t.Errorf("plan lacks %q:\n%s", s, got)
		}
	}
}

func TestDiffCommand(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	first, second := applyFixture(t)

	code, out, stderr := runCLI(t, "diff", first, second)
	want := "revision " + first + " -> " + second + ":\n\n~ Upstream api (changed)\n    @@ "
	if code != 0 || !strings.HasPrefix(out, want) ||
		!strings.Contains(out, "    -    - address: 127.0.0.1:9000\n    +    - address: 127.0.0.1:9001\n") ||
		!strings.HasSuffix(out, "\n0 created, 1 changed, 0 removed.\n") {
		t.Fatalf("diff: exit %d:\n%s\n%s", code, out, stderr)
	}
	if code, out, _ := runCLI(t, "diff", second, second); code != 0 || !strings.HasPrefix(out, "no differences") {
		t.Errorf("diff of a revision with itself: exit %d: %s", code, out)
	}
}
