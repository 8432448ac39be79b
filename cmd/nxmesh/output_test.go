package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestJSONToYAML(t *testing.T) {
	raw := json.RawMessage(`{"kind":"Upstream","metadata":{"name":"api","labels":{}},"spec":{"servers":[{"address":"10.0.0.1:80","weight":2}],"hashKey":"true","ports":["8080"]},"note":"a\nb\n","n":null}`)
	got, err := jsonToYAML(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := `kind: Upstream
metadata:
  name: api
  labels: {}
spec:
  servers:
    - address: 10.0.0.1:80
      weight: 2
  hashKey: "true"
  ports:
    - "8080"
note: |
  a
  b
n: null
`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

func TestAge(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		ago  time.Duration
		want string
	}{
		{0, "0s"}, {-time.Minute, "0s"}, {59 * time.Second, "59s"}, {90 * time.Second, "1m"},
		{47 * time.Hour, "47h"}, {49 * time.Hour, "2d"},
	}
	for _, tc := range tests {
		if got := age(now, now.Add(-tc.ago)); got != tc.want {
			t.Errorf("age(%s) = %q, want %q", tc.ago, got, tc.want)
		}
	}
	if got := age(now, time.Time{}); got != "-" {
		t.Errorf("age(zero) = %q", got)
	}
}

func TestPrintTable(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	items := func(js ...string) []json.RawMessage {
		out := make([]json.RawMessage, len(js))
		for i, j := range js {
			out[i] = json.RawMessage(j)
		}
		return out
	}
	tests := []struct {
		kind  string
		items []json.RawMessage
		want  string
	}{
		{kind: "agents", items: items(
			`{"id":"web-1","labels":{"region":"eu","env":"prod"},"online":true,"relay":"relay-eu-1","lastSeen":"2025-06-01T11:59:55Z","appliedHash":"sha256:0123456789abcdef0123","status":"applied"}`,
			`{"id":"web-22","labels":{},"online":false,"relay":"","lastSeen":"","appliedHash":"","status":"pending"}`),
			want: `ID       STATUS    ONLINE   RELAY        LABELS               LAST SEEN   APPLIED
web-1    applied   yes      relay-eu-1   env=prod,region=eu   5s          0123456789ab
web-22   pending   no       -            -                    -           -
`},
		{kind: "relays", items: items(`{"id":"relay-eu-1","hub":"hub-a","connectedAt":"2025-06-01T09:00:00Z","agents":120}`),
			want: `ID           HUB     AGENTS   CONNECTED
relay-eu-1   hub-a   120      3h
`},
		{kind: "upstreams", items: items(
			`{"kind":"Upstream","metadata":{"name":"api","version":3,"updatedAt":"2025-06-01T11:30:00Z"},"spec":{"servers":[{"address":"10.0.0.1:80"},{"address":"10.0.0.2:80"},{"address":"10.0.0.3:80"},{"address":"10.0.0.4:80"}]}}`),
			want: `NAME   SERVERS                                         VERSION   UPDATED
api    10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 (+1 more)   3         30m
`},
		{kind: "revisions", items: items(
			`{"number":12,"author":"admin","message":"shop: new upstream\nlonger text","createdAt":"2025-05-30T12:00:00Z"}`,
			`{"number":11,"author":"ci","message":"","createdAt":"2025-06-01T11:00:00Z"}`),
			want: `NUMBER   AUTHOR   MESSAGE                  CREATED
12       admin    shop: new upstream ...   2d
11       ci       -                        1h
`},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printTable(&buf, tc.kind, tc.items, now); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Errorf("got\n%s\nwant\n%s", buf.String(), tc.want)
			}
		})
	}
}

func TestTableCellsCannotBreakColumns(t *testing.T) {
	var buf bytes.Buffer
	tb := newTable(&buf, "A", "B")
	tb.row("x\ty", "line\nbreak")
	tb.flush()
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Errorf("%d lines:\n%s", got, buf.String())
	}
}
