package fleet

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/nginx"
	"github.com/nxmesh/nxmesh/schema"
	"github.com/nxmesh/nxmesh/wire"
)

// TestDeltaForAgentsOnANewRevision: when a new revision changes an
// agent's bundle, a relay that takes deltas gets, before the assignment,
// the delta from the bundle the agent runs, and it builds the new bundle
// exactly; a relay that does not list the capability gets whole bundles
// only.
func TestDeltaForAgentsOnANewRevision(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	for _, id := range []string{"a1", "a2"} {
		if _, err := db.PutAgent(ctx, store.Agent{ID: id, Workspace: "default"}); err != nil {
			t.Fatal(err)
		}
	}
	apply := func(yaml string) { t.Helper(); applyYAML(t, db, yaml) }
	apply(twoSites)
	f, err := New(Config{DB: db, HubID: "hub-1", TrustDomain: "nxmesh.local"})
	if err != nil {
		t.Fatal(err)
	}
	session := func(id string, deltas bool) *relaySession {
		return &relaySession{f: f, id: id, kick: make(chan struct{}, 1), deltas: deltas,
			agents: map[string]bool{}, desired: map[string]string{}, sent: map[string]bool{}, sentD: map[deltaKey]bool{}}
	}
	newer, older := session("relay-1", true), session("relay-2", false)
	f.addRelay(newer, []wire.AgentSession{{ID: "a1", Workspace: "default"}})
	f.addRelay(older, []wire.AgentSession{{ID: "a2", Workspace: "default"}})
	f.reconcile(ctx)
	first := newer.desired["a1"]
	if first == "" || len(newer.bundles) != 1 || len(newer.deltaQ) != 0 {
		t.Fatalf("first assignment: desired %q, %d bundles, %d deltas; want one whole bundle", first, len(newer.bundles), len(newer.deltaQ))
	}
	b1 := newer.bundles[0]
	f.onResults(newer, &wire.Results{Items: []wire.AgentResult{{Agent: "a1", Result: wire.Result{Hash: first, State: wire.ResultApplied}}}})
	f.onResults(older, &wire.Results{Items: []wire.AgentResult{{Agent: "a2", Result: wire.Result{Hash: first, State: wire.ResultApplied}}}})
	newer.bundles, older.bundles = nil, nil

	apply(strings.Replace(twoSites, "port: 8081", "port: 8082", 1))
	f.Notify("default")
	f.reconcile(ctx)
	second := newer.desired["a1"]
	if second == "" || second == first || older.desired["a2"] != second {
		t.Fatalf("second assignment: %q and %q, want the same new hash (first %s)", second, older.desired["a2"], first)
	}
	if len(newer.deltaQ) != 1 || len(newer.bundles) != 1 {
		t.Fatalf("relay that takes deltas got %d deltas and %d bundles, want 1 and 1", len(newer.deltaQ), len(newer.bundles))
	}
	if len(older.deltaQ) != 0 || len(older.bundles) != 1 {
		t.Errorf("relay that does not take deltas got %d deltas and %d bundles, want 0 and 1", len(older.deltaQ), len(older.bundles))
	}
	d, b2 := newer.deltaQ[0], newer.bundles[0]
	if d.base != first || d.hash != second || d.size <= 0 || len(d.payload) >= len(b2.payload) {
		t.Fatalf("delta %s -> %s of %d bytes (%d sent), want %s -> %s and smaller than the bundle's %d", d.base, d.hash, d.size, len(d.payload), first, second, len(b2.payload))
	}
	data, err := wire.DecodePayload(d.encoding, d.payload, int(d.size))
	if err != nil {
		t.Fatal(err)
	}
	built, err := nginx.ApplyDelta(b1.files, data, d.hash, nginx.Limits{})
	if err != nil {
		t.Fatalf("the delta does not build the new bundle: %v", err)
	}
	want, _ := b2.files.MarshalBinary()
	if got, _ := built.MarshalBinary(); string(got) != string(want) {
		t.Error("the delta builds another bundle than the one assigned")
	}
}

// TestAssignInChunks: agents assigned in several chunks all get the new
// bundle, and each relay gets the bundle's bytes and the delta once.
func TestAssignInChunks(t *testing.T) {
	ctx := context.Background()
	db := openStore(t)
	defer func(n int) { assignChunk = n }(assignChunk)
	assignChunk = 2
	var snap []wire.AgentSession
	for i := range 5 {
		id := fmt.Sprintf("a%d", i)
		if _, err := db.PutAgent(ctx, store.Agent{ID: id, Workspace: "default"}); err != nil {
			t.Fatal(err)
		}
		snap = append(snap, wire.AgentSession{ID: id, Workspace: "default"})
	}
	apply := func(yaml string) { t.Helper(); applyYAML(t, db, yaml) }
	apply(twoSites)
	f, err := New(Config{DB: db, HubID: "hub-1", TrustDomain: "nxmesh.local"})
	if err != nil {
		t.Fatal(err)
	}
	rs := &relaySession{f: f, id: "relay-1", kick: make(chan struct{}, 1), deltas: true,
		agents: map[string]bool{}, desired: map[string]string{}, sent: map[string]bool{}, sentD: map[deltaKey]bool{}}
	f.addRelay(rs, snap)
	f.reconcile(ctx)
	first := rs.desired["a0"]
	var results wire.Results
	for _, a := range snap {
		if rs.desired[a.ID] != first {
			t.Fatalf("first revision: %s wants %q, a0 %q", a.ID, rs.desired[a.ID], first)
		}
		results.Items = append(results.Items, wire.AgentResult{Agent: a.ID, Result: wire.Result{Hash: first, State: wire.ResultApplied}})
	}
	f.onResults(rs, &results)
	rs.bundles, rs.desired = nil, map[string]string{}

	apply(strings.Replace(twoSites, "port: 8081", "port: 8082", 1))
	f.Notify("default")
	f.reconcile(ctx)
	second := rs.desired["a0"]
	for _, a := range snap {
		if got := rs.desired[a.ID]; got == first || got != second {
			t.Errorf("second revision: %s wants %q, want %q like a0 (first %s)", a.ID, got, second, first)
		}
	}
	if len(rs.bundles) != 1 || len(rs.deltaQ) != 1 {
		t.Errorf("relay got %d bundles and %d deltas for 5 agents in 3 chunks, want 1 and 1", len(rs.bundles), len(rs.deltaQ))
	}
}

// applyYAML applies the resources in yaml to the default workspace.
func applyYAML(t *testing.T, db *store.DB, yaml string) {
	t.Helper()
	docs, err := schema.Decode("sites.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Apply(context.Background(), "default", docs, store.Change{Author: "test"}); err != nil {
		t.Fatal(err)
	}
}
