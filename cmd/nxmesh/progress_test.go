package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFormatProgress(t *testing.T) {
	tests := []struct {
		name string
		c    convergence
		want string
	}{
		{name: "no agents", c: convergence{Revision: 1},
			want: "revision 1: 0/0 applied, 0 rejected, 0 pending, 0 offline"},
		{name: "mixed", c: convergence{Revision: 7, Total: 3, Counts: convergenceCounts{Applied: 2, Pending: 1}},
			want: "revision 7: 2/3 applied, 0 rejected, 1 pending, 0 offline"},
		{name: "rolled back and failed shown when some are", c: convergence{Revision: 9, Total: 6, Counts: convergenceCounts{Applied: 1, Rejected: 1, RolledBack: 2, Failed: 1, Offline: 1}},
			want: "revision 9: 1/6 applied, 1 rejected, 2 rolled back, 1 failed, 0 pending, 1 offline"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := formatProgress(tc.c); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestProgressLog(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf)
	if p.tty {
		t.Fatal("a buffer is not a terminal")
	}
	for _, l := range []string{"a", "a", "b", "b", "b", "c"} {
		p.show(l, time.Second)
	}
	p.end()
	if got := buf.String(); got != "a\nb\nc\n" {
		t.Errorf("a log should get a line per change, got %q", got)
	}
}

func TestProgressTerminal(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf, tty: true}
	p.show("revision 2: 0/2 applied", 300*time.Millisecond)
	p.show("revision 2: 0/2 applied", 600*time.Millisecond) // same second: nothing to redraw
	p.show("revision 2: 2/2 applied", 1700*time.Millisecond)
	p.show("done", 1800*time.Millisecond)
	p.end()
	want := "\rrevision 2: 0/2 applied (0s)" +
		"\rrevision 2: 2/2 applied (1s)" +
		"\rdone (1s)" + strings.Repeat(" ", len("revision 2: 2/2 applied (1s)")-len("done (1s)")) + "\n"
	if got := buf.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name   string
		c      convergence
		why    string
		ok     bool
		stdout string
		stderr []string
		msg    string
	}{
		{name: "no agents", c: convergence{Revision: 4}, ok: true,
			stdout: "revision 4: workspace default has no agents yet; they get it when they enroll\n"},
		{name: "all applied", c: convergence{Revision: 4, Total: 2, Done: true, Counts: convergenceCounts{Applied: 2}}, ok: true,
			stdout: "revision 4 applied by 2 of 2 online agents\n"},
		{name: "rejected", c: convergence{Revision: 4, Total: 3, Done: true,
			Counts: convergenceCounts{Applied: 1, Rejected: 1, RolledBack: 1},
			Failing: []failingAgent{
				{Agent: "web-2", Relay: "relay-eu-1", State: "rejected", Reason: "nginx -t failed", Output: "nginx: [emerg] unknown directive \"x\"\nnginx: configuration file test failed\n"},
				{Agent: "web-3", State: "rolledBack", Reason: "verify: no answer on :80"},
			}},
			stderr: []string{
				"agent web-2 (relay relay-eu-1): rejected: nginx -t failed\n    nginx: [emerg] unknown directive \"x\"\n    nginx: configuration file test failed\n",
				"agent web-3: rolledBack: verify: no answer on :80\n",
			},
			msg: "revision 4 failed on 2 of 3 online agents"},
		{name: "timed out", c: convergence{Revision: 4, Total: 3, Counts: convergenceCounts{Applied: 1, Pending: 2}}, why: "timed out after 2m0s",
			stderr: []string{"pending: (could not list them: reach the hub at https://127.0.0.1:1: "},
			msg:    "timed out after 2m0s: revision 4 is still pending on 2 of 3 online agents"},
		{name: "superseded", c: convergence{Revision: 4, Head: 5, Total: 1, Counts: convergenceCounts{Pending: 1}},
			msg: "revision 4 was superseded by revision 5: revision 4 is still pending on 1 of 1 online agent"},
		{name: "all offline", c: convergence{Revision: 4, Total: 2, Done: true, Counts: convergenceCounts{Offline: 2}}, ok: true,
			stdout: "revision 4: no agent is online to apply it yet\n",
			stderr: []string{"warning: 2 agents offline, to get revision 4 when they reconnect: (could not list them: "}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			api, err := newAPIClientFor(unreachableHub, nil, "nxs_unused")
			if err != nil {
				t.Fatal(err)
			}
			r := &rollout{api: api, ws: workspaceFlags{Workspace: "default"}, rev: tc.c.Revision, g: &Globals{stdout: &out, stderr: &errb}}
			err = r.verdict(context.Background(), tc.c, tc.why)
			if tc.ok != (err == nil) {
				t.Fatalf("verdict: %v", err)
			}
			var ee *exitError
			if err != nil && (!errors.As(err, &ee) || ee.code != 1 || ee.msg != tc.msg) {
				t.Errorf("error %#v, want exit 1 with %q", err, tc.msg)
			}
			if out.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", out.String(), tc.stdout)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr %q lacks %q", errb.String(), s)
				}
			}
		})
	}
}
