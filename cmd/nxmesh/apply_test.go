package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runCLIInput is runCLI with standard input.
func runCLIInput(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runWithInput(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// unreachableHub is a hub URL nothing listens on: a command that reaches
// for it fails with "reach the hub".
const unreachableHub = "https://127.0.0.1:1"

func TestApplyChecksLocally(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", badYAML)
	good := writeFile(t, dir, "good.yaml", goodYAML)
	dup := writeFile(t, t.TempDir(), "dup.yaml", strings.SplitN(goodYAML, "---", 2)[0])
	empty := t.TempDir()
	writeFile(t, empty, "notes.txt", "not a resource")

	tests := []struct {
		name   string
		args   []string
		stdin  string
		code   int
		stderr []string
	}{
		{name: "schema errors name file, document and field", args: []string{"-f", bad}, code: 1, stderr: []string{
			bad + ": document 1: spec.servers[0].address: ",
			bad + ": document 2: metadata.name: ",
			"nxmesh: the input is invalid (2 problems)"}},
		{name: "standard input", args: []string{"-f", "-"}, stdin: badYAML, code: 1, stderr: []string{
			"<stdin>: document 1: spec.servers[0].address: "}},
		{name: "duplicate across files", args: []string{"-f", good, "-f", dup}, code: 1, stderr: []string{
			dup + `: document 1: metadata.name: duplicate Upstream "api" (first defined in ` + good + " document 1)"}},
		{name: "directory without resource files", args: []string{"-f", empty}, code: 2, stderr: []string{"holds no *.yaml"}},
		{name: "missing file", args: []string{"-f", filepath.Join(dir, "nope.yaml")}, code: 2, stderr: []string{"nope.yaml"}},
		{name: "only comments", args: []string{"-f", "-"}, stdin: "# nothing\n", code: 1, stderr: []string{"no resources in <stdin>"}},
		{name: "stdin twice", args: []string{"-f", "-", "-f", "-"}, code: 2, stderr: []string{"only once"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"apply", "--hub", unreachableHub, "--token", "nxs_unused"}, tc.args...)
			code, _, stderr := runCLIInput(t, tc.stdin, args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			if strings.Contains(stderr, "reach the hub") {
				t.Errorf("invalid input was sent to the hub: %s", stderr)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
		})
	}
}

func TestApplyNeedsLogin(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	good := writeFile(t, t.TempDir(), "good.yaml", goodYAML)
	code, _, stderr := runCLI(t, "apply", "--hub", unreachableHub, "-f", good)
	if code != 1 || !strings.Contains(stderr, "not logged in: run nxmesh login") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
}

const changedUpstream = `apiVersion: nxmesh/v1
kind: Upstream
metadata:
  name: api
spec:
  servers:
    - address: 127.0.0.1:9001
`

// TestApplyEndToEnd runs apply against a real hub: a dry run changes
// nothing, apply stores a revision and (no agents being enrolled) succeeds,
// the same files again change nothing, and a change shows as a diff.
func TestApplyEndToEnd(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	files := t.TempDir()
	writeFile(t, files, "10-app.yaml", goodYAML)

	code, out, stderr := runCLI(t, "apply", "--dry-run", "-f", files)
	if code != 0 {
		t.Fatalf("apply --dry-run: exit %d: %s", code, stderr)
	}
	for _, s := range []string{"+ Upstream api (created)\n", "+ VirtualHost web (created)\n", "    +  serverNames:\n",
		"Plan: 2 to create, 0 to change, 0 to remove.\n", "dry run: nothing was applied\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("dry run output lacks %q:\n%s", s, out)
		}
	}
	if code, out, stderr := runCLI(t, "get", "upstreams", "-o", "json"); code != 0 || strings.Contains(out, `"api"`) {
		t.Fatalf("after a dry run: exit %d, upstreams %s %s", code, out, stderr)
	}

	code, out, stderr = runCLI(t, "apply", "-f", files, "-m", "first cut")
	if code != 0 {
		t.Fatalf("apply: exit %d:\n%s\n%s", code, out, stderr)
	}
	rev := regexp.MustCompile(`applied: revision (\d+)\n`).FindStringSubmatch(out)
	if rev == nil {
		t.Fatalf("apply printed no revision:\n%s", out)
	}
	if !strings.Contains(out, "revision "+rev[1]+": workspace default has no agents yet") {
		t.Errorf("apply output lacks the rollout verdict:\n%s", out)
	}
	if !strings.Contains(stderr, "revision "+rev[1]+": 0/0 applied, 0 rejected, 0 pending, 0 offline") {
		t.Errorf("no progress line on stderr:\n%s", stderr)
	}

	code, out, stderr = runCLI(t, "apply", "-f", files)
	if code != 0 || out != "no changes; workspace is at revision "+rev[1]+"\nrevision "+rev[1]+": workspace default has no agents yet; they get it when they enroll\n" {
		t.Fatalf("second apply: exit %d:\n%s\n%s", code, out, stderr)
	}

	code, out, stderr = runCLIInput(t, changedUpstream, "apply", "--no-wait", "-f", "-")
	if code != 0 {
		t.Fatalf("apply a change: exit %d: %s", code, stderr)
	}
	for _, s := range []string{"~ Upstream api (changed)\n", "    -    - address: 127.0.0.1:9000\n    +    - address: 127.0.0.1:9001\n",
		"Plan: 0 to create, 1 to change, 0 to remove.\n"} {
		if !strings.Contains(out, s) {
			t.Errorf("apply of a change lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(stderr, "applied, ") {
		t.Errorf("--no-wait waited:\n%s", stderr)
	}

	// What get prints, read-only metadata and all, applies after an edit,
	// as a kubectl user would try it.
	code, got, stderr := runCLI(t, "get", "upstream", "api", "-o", "yaml")
	if code != 0 || !strings.Contains(got, "version:") || !strings.Contains(got, "createdAt:") {
		t.Fatalf("get upstream api -o yaml: exit %d, output lacks the read-only metadata:\n%s\n%s", code, got, stderr)
	}
	edited := strings.Replace(got, "127.0.0.1:9001", "127.0.0.1:9002", 1)
	code, out, stderr = runCLIInput(t, edited, "apply", "--no-wait", "-f", "-")
	if code != 0 || !strings.Contains(out, "    +    - address: 127.0.0.1:9002\n") {
		t.Fatalf("apply of what get printed, edited: exit %d:\n%s\n%s", code, out, stderr)
	}
	// So does a list: `get KINDs -o yaml` prints {items: [...]}.
	code, got, stderr = runCLI(t, "get", "upstreams", "-o", "yaml")
	if code != 0 || !strings.HasPrefix(got, "items:\n") {
		t.Fatalf("get upstreams -o yaml: exit %d:\n%s\n%s", code, got, stderr)
	}
	edited = strings.Replace(got, "127.0.0.1:9002", "127.0.0.1:9003", 1)
	code, out, stderr = runCLIInput(t, edited, "apply", "--no-wait", "-f", "-")
	if code != 0 || !strings.Contains(out, "    +    - address: 127.0.0.1:9003\n") || !strings.Contains(out, "Plan: 0 to create, 1 to change, 0 to remove.\n") {
		t.Fatalf("apply of the list get printed, edited: exit %d:\n%s\n%s", code, out, stderr)
	}
	// The read-only fields are still checked: a version that is not a
	// number is refused, naming the file and field.
	bad := strings.Replace(edited, "version: ", "version: x", 1)
	if code, _, stderr := runCLIInput(t, bad, "apply", "--no-wait", "-f", "-"); code == 0 || !strings.Contains(stderr, "<stdin>: document 1: metadata.version") {
		t.Fatalf("apply of a bad version: exit %d:\n%s", code, stderr)
	}
}

// TestApplyHubRefuses: a reference the hub cannot resolve is its error,
// printed with the field.
func TestApplyHubRefuses(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	vhost := "apiVersion: nxmesh/v1\nkind: VirtualHost\nmetadata:\n  name: web\nspec:\n  serverNames: [web.example.com]\n  locations: [{path: /, upstream: missing}]\n"
	code, out, stderr := runCLIInput(t, vhost, "apply", "-f", "-")
	if code != 1 || !strings.Contains(stderr, "spec.locations[0].upstream") || !strings.Contains(stderr, "missing") {
		t.Fatalf("exit %d:\n%s\n%s", code, out, stderr)
	}

	// Every problem the hub finds is named with the file and the document
	// it came from, not its position in the request.
	tmp := t.TempDir()
	ups := writeFile(t, tmp, "a.yaml", strings.SplitN(goodYAML, "---", 2)[0])
	two := writeFile(t, tmp, "b.yaml", vhost+"---\n"+strings.Replace(vhost, "name: web", "name: shop", 1))
	code, out, stderr = runCLI(t, "apply", "-f", ups, "-f", two)
	for _, want := range []string{
		two + ": document 1: spec.locations[0].upstream: ",
		two + ": document 2: spec.locations[0].upstream: ",
		"nxmesh: the input is invalid (2 problems)",
	} {
		if code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("exit %d; stderr lacks %q:\n%s\n%s", code, want, out, stderr)
		}
	}
}

// applyFixture applies goodYAML, then a change to the upstream, and returns
// the two revisions' numbers as printed.
func applyFixture(t *testing.T) (first, second string) {
	t.Helper()
	good := writeFile(t, t.TempDir(), "good.yaml", goodYAML)
	revRE := regexp.MustCompile(`applied: revision (\d+)\n`)
	code, out, stderr := runCLI(t, "apply", "--no-wait", "-f", good, "-m", "first cut")
	if code != 0 || revRE.FindStringSubmatch(out) == nil {
		t.Fatalf("apply: exit %d:\n%s\n%s", code, out, stderr)
	}
	first = revRE.FindStringSubmatch(out)[1]
	code, out, stderr = runCLIInput(t, changedUpstream, "apply", "--no-wait", "-f", "-", "-m", "move api to 9001")
	if code != 0 || revRE.FindStringSubmatch(out) == nil {
		t.Fatalf("apply: exit %d:\n%s\n%s", code, out, stderr)
	}
	return first, revRE.FindStringSubmatch(out)[1]
}

// TestReportApplied: what was applied is printed again only when it is not
// what the plan showed (someone changed the workspace in between).
func TestReportApplied(t *testing.T) {
	up := func(addr, version string) json.RawMessage {
		return json.RawMessage(`{"kind":"Upstream","metadata":{"name":"api","version":` + version + `},"spec":{"servers":[{"address":"` + addr + `"}]}}`)
	}
	plan := applyResult{Revision: 4, Changed: true, Diff: []diffEntry{{Kind: "Upstream", Name: "api", Op: opChanged, Old: up("10.0.0.1:80", "3"), New: up("10.0.0.2:80", "4")}}}
	tests := []struct {
		name string
		done applyResult
		want string
	}{
		{name: "as planned, versions aside", done: applyResult{Revision: 5, Changed: true,
			Diff: []diffEntry{{Kind: "Upstream", Name: "api", Op: opChanged, Old: up("10.0.0.1:80", "3"), New: up("10.0.0.2:80", "5")}}},
			want: "\napplied: revision 5\n"},
		{name: "changed meanwhile", done: applyResult{Revision: 6, Changed: true,
			Diff: []diffEntry{{Kind: "Upstream", Name: "api", Op: opChanged, Old: up("10.0.0.9:80", "4"), New: up("10.0.0.2:80", "5")}}},
			want: "\nthe workspace changed after the plan; the hub made these changes instead:\n\n~ Upstream api (changed)\n"},
		{name: "nothing left to do", done: applyResult{Revision: 6},
			want: "no changes after all (the workspace changed meanwhile); workspace is at revision 6\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := reportApplied(&buf, plan, tc.done); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(buf.String(), tc.want) {
				t.Errorf("got\n%s\nwant it to start with\n%s", buf.String(), tc.want)
			}
		})
	}
}
