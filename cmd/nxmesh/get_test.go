package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/hub/store"
)

func TestGetResources(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	first, second := applyFixture(t)

	tests := []struct {
		name string
		args []string
		want []*regexp.Regexp
	}{
		{name: "upstreams table", args: []string{"get", "upstreams"}, want: res(
			`^NAME +SERVERS +VERSION +UPDATED\n`, `\napi +127\.0\.0\.1:9001 +2 +\d+s\n$`)},
		{name: "one upstream, singular", args: []string{"get", "upstream", "api"}, want: res(`\napi +127\.0\.0\.1:9001 +2 `)},
		{name: "vhosts table", args: []string{"get", "vhosts"}, want: res(
			`^NAME +SERVER NAMES +VERSION +UPDATED\n`, `\nweb +web\.example\.com +1 +\d+s\n$`)},
		{name: "virtualhosts json", args: []string{"get", "virtualhosts", "-o", "json"}, want: res(
			`^\{\n  "items": \[\n`, `"kind": "VirtualHost"`, `"serverNames": \[\n +"web\.example\.com"`)},
		{name: "one vhost yaml", args: []string{"get", "vhost", "web", "-o", "yaml"}, want: res(
			`(?m)^apiVersion: nxmesh/v1$`, `(?m)^kind: VirtualHost$`, `(?m)^  version: 1$`, `(?m)^    - web\.example\.com$`)},
		{name: "upstreams yaml", args: []string{"get", "upstreams", "-o", "yaml"}, want: res(
			`^items:\n  - apiVersion: nxmesh/v1\n`, `address: 127\.0\.0\.1:9001`)},
		{name: "revisions table", args: []string{"get", "revisions"}, want: res(
			`^NUMBER +AUTHOR +MESSAGE +CREATED\n`, `\n`+second+` +admin +move api to 9001 +\d+s\n`+first+` +admin +first cut +\d+s\n`)},
		{name: "revisions json", args: []string{"get", "revisions", "-o", "json"}, want: res(`"number": `+second+`,`, `"message": "first cut"`)},
		{name: "one revision lists its resources", args: []string{"get", "revision", first}, want: res(
			`\n`+first+` +admin +first cut +`, `\nKIND +NAME +VERSION +UPDATED\n`, `\nUpstream +api +1 `, `\nVirtualHost +web +1 `)},
		{name: "one revision yaml", args: []string{"get", "revision", first, "-o", "yaml"}, want: res(`(?m)^number: `+first+`$`, `(?m)^resources:$`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := runCLI(t, tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			for _, re := range tc.want {
				if !re.MatchString(out) {
					t.Errorf("output does not match %s:\n%s", re, out)
				}
			}
			if strings.Contains(tc.name, "json") && !json.Valid([]byte(out)) {
				t.Errorf("not JSON:\n%s", out)
			}
		})
	}
}

func res(exprs ...string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(exprs))
	for i, e := range exprs {
		out[i] = regexp.MustCompile(e)
	}
	return out
}

func TestGetErrors(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{name: "unknown kind", args: []string{"get", "pods"}, code: 2, stderr: `cannot get "pods"`},
		{name: "label on upstreams", args: []string{"get", "upstreams", "-l", "env=prod"}, code: 2, stderr: "only to agents"},
		{name: "revision not a number", args: []string{"get", "revision", "head"}, code: 2, stderr: `revision "head" is not a number`},
		{name: "missing resource", args: []string{"get", "upstream", "nope"}, code: 1, stderr: "hub: "},
		{name: "unknown workspace", args: []string{"get", "upstreams", "--workspace", "nope"}, code: 1, stderr: "hub: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, want %d with %q: %s", code, tc.code, tc.stderr, stderr)
			}
		})
	}
}

// TestGetAgents lists more agents than one page holds: every page is
// fetched, and the filters reach the hub.
func TestGetAgents(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	const n = 202 // the hub's pages hold 100
	for i := range n {
		labels := map[string]string{"group": "even"}
		if i%2 == 1 {
			labels["group"] = "odd"
		}
		if _, err := s.Store().PutAgent(context.Background(), store.Agent{ID: fmt.Sprintf("web-%03d", i), Workspace: "default", Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(args ...string) int {
		t.Helper()
		code, out, stderr := runCLI(t, append([]string{"get", "agents", "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("get agents %v: exit %d: %s", args, code, stderr)
		}
		var list struct{ Items []agentInfo }
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		return len(list.Items)
	}
	if got := count(); got != n {
		t.Errorf("get agents: %d agents, want %d", got, n)
	}
	if got := count("-l", "group=odd"); got != n/2 {
		t.Errorf("get agents -l group=odd: %d agents, want %d", got, n/2)
	}
	if got := count("-l", "group=odd", "--status", "online"); got != 0 {
		t.Errorf("get agents --status online: %d agents, want none", got)
	}

	code, out, stderr := runCLI(t, "get", "agents", "-l", "group=even")
	if code != 0 || !regexp.MustCompile(`^ID +STATUS +ONLINE +RELAY +LABELS +LAST SEEN +APPLIED\nweb-000 +\S+ +no +- +group=even +- +-\n`).MatchString(out) ||
		strings.Count(out, "\n") != 1+n/2 {
		t.Errorf("get agents table: exit %d:\n%s\n%s", code, out, stderr)
	}
	code, out, stderr = runCLI(t, "get", "agent", "web-007", "-o", "yaml")
	if code != 0 || !strings.HasPrefix(out, "id: web-007\nworkspace: default\nlabels:\n  group: odd\nonline: false\n") {
		t.Errorf("get agent -o yaml: exit %d:\n%s\n%s", code, out, stderr)
	}
	code, _, stderr = runCLI(t, "get", "agents", "--status", "sleepy")
	if code != 1 || !strings.Contains(stderr, "hub: status: ") {
		t.Errorf("a bad status: exit %d: %s", code, stderr)
	}
}

// TestGetRelays: the hub's embedded relay is listed once it has connected.
func TestGetRelays(t *testing.T) {
	s, dir := startTestHub(t)
	loginCLI(t, s, dir)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, stderr := runCLI(t, "get", "relays")
		if code != 0 {
			t.Fatalf("get relays: exit %d: %s", code, stderr)
		}
		if m := regexp.MustCompile(`^ID +HUB +AGENTS +CONNECTED\n(\S+) +\S+ +0 +\d+s\n$`).FindStringSubmatch(out); m != nil {
			code, out, stderr = runCLI(t, "get", "relay", m[1], "-o", "json")
			if code != 0 || !strings.Contains(out, `"id": "`+m[1]+`"`) {
				t.Fatalf("get relay %s: exit %d:\n%s\n%s", m[1], code, out, stderr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no relay listed after 10 s:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _, stderr := runCLI(t, "get", "relay", "nope"); code != 1 || !strings.Contains(stderr, `relay "nope" is not connected`) {
		t.Errorf("unknown relay: exit %d: %s", code, stderr)
	}
}
