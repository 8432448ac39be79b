package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/schema"
	"github.com/nxmesh/nxmesh/wire"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const twoSites = `apiVersion: nxmesh/v1
kind: Upstream
metadata: {name: app}
spec:
  servers: [{address: "127.0.0.1:9000"}]
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata: {name: eu}
spec:
  serverNames: [eu.example.com]
  listen: [{port: 8080}]
  selector: {matchLabels: {region: eu}}
  locations: [{path: /, upstream: app}]
---
apiVersion: nxmesh/v1
kind: VirtualHost
metadata: {name: all}
spec:
  serverNames: [all.example.com]
  listen: [{port: 8081}]
  locations: [{path: /, upstream: app}]
`

func openStore(t *testing.T) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{URL: filepath.Join(t.TempDir(), "hub.db"), SecretKey: make([]byte, 32)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.EnsureDefault(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestBundlesShareBySelection: agents whose labels select the same virtual
// hosts share one compiled bundle, whatever their other labels; a different
// selection or status port gives another bundle.
func TestBundlesShareBySelection(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	docs, err := schema.Decode("sites.yaml", []byte(twoSites))
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.Apply(ctx, "default", docs, store.Change{Author: "test"})
	if err != nil {
		t.Fatal(err)
	}
	revs := &revisions{db: db, sets: map[string][]*revisionSet{}}
	set, err := revs.get(ctx, "default", res.Revision)
	if err != nil {
		t.Fatal(err)
	}
	compiled := func(labels map[string]string) *bundle {
		t.Helper()
		b, err := set.bundleFor(labels)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	eu1 := compiled(map[string]string{"region": "eu", "host": "web-1"})
	eu2 := compiled(map[string]string{"region": "eu", "host": "web-2"})
	us := compiled(map[string]string{"region": "us", "host": "web-3"})
	eu3 := compiled(map[string]string{"region": "eu", LabelStatusPort: "9999"})
	if eu1 != eu2 {
		t.Error("two agents with the same selection got two compiles")
	}
	if us.hash == eu1.hash || eu3.hash == eu1.hash {
		t.Error("a different selection or status port got the same bundle")
	}
	if len(set.bySel) != 3 {
		t.Errorf("compiled %d bundles, want 3", len(set.bySel))
	}
	if got := revs.lookup(us.hash); got != us {
		t.Error("lookup by hash does not find a compiled bundle")
	}
	// The same revision again is the cached set; compilation is
	// deterministic across sets.
	again, err := revs.get(ctx, "default", res.Revision)
	if err != nil || again != set {
		t.Fatalf("revision set not cached: %v", err)
	}
	fresh := &revisionSet{ws: "default", rev: res.Revision, set: set.set, bySel: map[string]*bundle{}, errs: map[string]error{}}
	if b, err := fresh.bundleFor(map[string]string{"region": "eu"}); err != nil || b.hash != eu1.hash {
		t.Errorf("recompiling gave hash %v (%v), want %s", b, err, eu1.hash)
	}
}

func TestClassify(t *testing.T) {
	const want = "aaaa"
	for _, tc := range []struct {
		name string
		v    AgentView
		err  error
		out  string
	}{
		{"offline", AgentView{Agent: store.Agent{AppliedHash: want}}, nil, StateOffline},
		{"applied", AgentView{Online: true, Agent: store.Agent{AppliedHash: want}}, nil, StateApplied},
		{"pending", AgentView{Online: true, Agent: store.Agent{AppliedHash: "old"}}, nil, StatePending},
		{"rejected", AgentView{Online: true, Agent: store.Agent{AppliedHash: "old", ResultHash: want, LastResult: wire.ResultRejected}}, nil, StateRejected},
		{"rolled back", AgentView{Online: true, Agent: store.Agent{AppliedHash: "old", ResultHash: want, LastResult: wire.ResultRolledBack}}, nil, StateRolledBack},
		{"applied by its result, before a heartbeat says so", AgentView{Online: true, Agent: store.Agent{AppliedHash: "old", ResultHash: want, LastResult: wire.ResultApplied}}, nil, StateApplied},
		{"old rejection", AgentView{Online: true, Agent: store.Agent{AppliedHash: "old", ResultHash: "other", LastResult: wire.ResultRejected}}, nil, StatePending},
		{"no bundle", AgentView{Online: true}, context.Canceled, StateFailed},
	} {
		tc.v.DesiredHash = want
		if got, _ := classify(&tc.v, tc.err); got != tc.out {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.out)
		}
	}
}

// TestRestartedRelayKeepsAgentsOnline: when a relay's old session ends and
// its new session reports the same agent before the status is written,
// the agent stays on the relay in the store: the disconnect of the old
// session must not be written after the new session's status.
// oneAgentFleet is a fleet of hub-1 over a store that knows agent a1.
func oneAgentFleet(t *testing.T) (*Fleet, *store.DB) {
	t.Helper()
	db := openStore(t)
	if _, err := db.PutAgent(context.Background(), store.Agent{ID: "a1", Workspace: "default"}); err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{DB: db, HubID: "hub-1", TrustDomain: "nxmesh.local"})
	if err != nil {
		t.Fatal(err)
	}
	return f, db
}

// relayWithoutConn is a session of relay-1 as addRelay takes it, without
// a connection.
func relayWithoutConn(f *Fleet) *relaySession {
	return &relaySession{f: f, id: "relay-1", kick: make(chan struct{}, 1),
		agents: map[string]bool{}, desired: map[string]string{}, sent: map[string]bool{}}
}

func TestRestartedRelayKeepsAgentsOnline(t *testing.T) {
	ctx := context.Background()
	f, db := oneAgentFleet(t)
	session := func() *relaySession { return relayWithoutConn(f) }
	agentRelay := func() string {
		t.Helper()
		a, err := db.GetAgent(ctx, "a1")
		if err != nil {
			t.Fatal(err)
		}
		return a.Relay
	}
	snap := []wire.AgentSession{{ID: "a1", Workspace: "default"}}
	old := session()
	f.addRelay(old, snap)
	f.flush(ctx)
	if got := agentRelay(); got != "relay-1" {
		t.Fatalf("after connecting: relay %q, want relay-1", got)
	}
	f.removeRelay(old)
	f.addRelay(session(), snap) // back before the flush
	f.flush(ctx)
	if got := agentRelay(); got != "relay-1" {
		t.Errorf("after the relay's restart: relay %q, want relay-1 (the agent is connected)", got)
	}
}

// TestAgentsPage: pages of a filtered listing hold exactly the accepted
// agents, in id order, each once, however the pages and the store's
// chunks fall; Agent finds one agent and refuses one of another
// workspace.
func TestAgentsPage(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	if _, err := db.CreateWorkspace(ctx, store.DefaultName, "other"); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 11 {
		a := store.Agent{ID: fmt.Sprintf("a%02d", i), Workspace: "default"}
		if i%3 != 0 {
			a.Labels = map[string]string{"region": "eu"}
			want = append(want, a.ID)
		}
		if _, err := db.PutAgent(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.PutAgent(ctx, store.Agent{ID: "b00", Workspace: "other", Labels: map[string]string{"region": "eu"}}); err != nil {
		t.Fatal(err)
	}
	f, err := New(Config{DB: db, HubID: "hub-1", TrustDomain: "nxmesh.local"})
	if err != nil {
		t.Fatal(err)
	}
	defer func(n int) { agentsPageChunk = n }(agentsPageChunk)
	eu := func(v AgentView) bool { return v.Labels["region"] == "eu" }
	for _, chunk := range []int{1, 2, 4, 1000} {
		for _, limit := range []int{1, 3, 7, 100} {
			agentsPageChunk = chunk
			var got []string
			after := ""
			for pages := 0; ; pages++ {
				if pages > len(want) {
					t.Fatalf("chunk %d limit %d: more pages than agents", chunk, limit)
				}
				page, more, err := f.AgentsPage(ctx, "default", after, limit, eu)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > limit || more && len(page) < limit {
					t.Fatalf("chunk %d limit %d: page of %d, more %v", chunk, limit, len(page), more)
				}
				for _, v := range page {
					got = append(got, v.ID)
				}
				if !more {
					break
				}
				after = page[len(page)-1].ID
			}
			if !slices.Equal(got, want) {
				t.Errorf("chunk %d limit %d: %v, want %v", chunk, limit, got, want)
			}
		}
	}
	if v, err := f.Agent(ctx, "default", "a01"); err != nil || v.ID != "a01" || v.State != StateOffline {
		t.Errorf("Agent(a01) = %+v, %v", v, err)
	}
	for _, id := range []string{"b00", "nope"} {
		if _, err := f.Agent(ctx, "default", id); !errors.Is(err, ErrNoAgent) {
			t.Errorf("Agent(%s) in default: %v, want ErrNoAgent", id, err)
		}
	}
}
