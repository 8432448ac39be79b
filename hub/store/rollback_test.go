package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/schema"
	"golang.org/x/sync/errgroup"
)

func TestRollback(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		ws, _ := db.EnsureDefault(ctx)
		apply := func(docs ...schema.Resource) {
			t.Helper()
			if _, err := db.Apply(ctx, ws.Name, docs, alice); err != nil {
				t.Fatal(err)
			}
		}
		apply(upstream("web", "10.0.0.1:80", nil), upstream("old", "10.0.0.9:80", nil), vhost("site", "example.com", "web")) // 1
		apply(upstream("web", "10.0.0.2:80", map[string]string{"moved": "yes"}))                                             // 2
		if _, err := db.DeleteResource(ctx, ws.Name, schema.KindUpstream, "old", 0, alice); err != nil {                     // 3
			t.Fatal(err)
		}
		apply(upstream("api", "10.0.0.3:80", nil), vhost("shop", "shop.example.com", "api")) // 4

		res, err := db.Rollback(ctx, ws.Name, 1, Change{Author: "bob", Message: "back to 1"})
		if err != nil {
			t.Fatal(err)
		}
		want := []Applied{
			{schema.KindUpstream, "old", Created, 1},
			{schema.KindUpstream, "web", Updated, 3},
			{schema.KindVirtualHost, "site", Unchanged, 1},
		}
		if !res.Changed || res.Revision != 5 || !reflect.DeepEqual(res.Resources, want) {
			t.Fatalf("rollback = %+v", res)
		}
		at1, _ := db.ResourcesAt(ctx, ws.Name, 1)
		at5, _ := db.ResourcesAt(ctx, ws.Name, 5)
		if !reflect.DeepEqual(at5, at1) {
			t.Errorf("after rollback:\n got %s\nwant %s", jsonOf(t, at5), jsonOf(t, at1))
		}
		d, _ := db.Diff(ctx, ws.Name, 4, 5)
		var got []string
		for _, e := range d {
			got = append(got, fmt.Sprintf("%s %s/%s", e.Op, e.Kind, e.Name))
		}
		wantDiff := []string{"removed Upstream/api", "added Upstream/old", "changed Upstream/web", "removed VirtualHost/shop"}
		if !reflect.DeepEqual(got, wantDiff) {
			t.Errorf("diff 4..5 = %q, want %q", got, wantDiff)
		}
		if rev, _ := db.GetRevision(ctx, ws.Name, 5); rev.Author != "bob" || rev.Message != "back to 1" {
			t.Errorf("revision 5 = %+v", rev)
		}

		// Rolling back to where the workspace already is writes nothing.
		res, err = db.Rollback(ctx, ws.Name, 1, alice)
		if err != nil || res.Changed || res.Revision != 5 {
			t.Errorf("second rollback = %+v, %v; want no change at 5", res, err)
		}
		for _, n := range []int64{0, 6, -1} {
			if _, err := db.Rollback(ctx, ws.Name, n, alice); !errors.Is(err, ErrNotFound) {
				t.Errorf("rollback to %d: %v, want ErrNotFound", n, err)
			}
		}
		if _, err := db.Rollback(ctx, "nope", 1, alice); !errors.Is(err, ErrNotFound) {
			t.Errorf("rollback of a missing workspace: %v", err)
		}
	})
}

// TestRollbackExactUnderWrites: rollbacks racing writers that create new
// resources still produce revisions equal to the target, never the target
// plus a resource created between the rollback's read and its write.
func TestRollbackExactUnderWrites(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		ws, _ := db.EnsureDefault(ctx)
		if _, err := db.Apply(ctx, ws.Name, []schema.Resource{upstream("base", "10.0.0.1:80", nil)}, alice); err != nil {
			t.Fatal(err)
		}
		const writes = 40
		done := make(chan struct{})
		var g errgroup.Group
		g.Go(func() error {
			defer close(done)
			for i := range writes {
				if _, err := db.Apply(ctx, ws.Name, []schema.Resource{upstream(fmt.Sprintf("new-%d", i), "10.0.0.2:80", nil)}, alice); err != nil {
					return err
				}
				time.Sleep(time.Duration(i%3) * 3 * time.Millisecond)
			}
			return nil
		})
		var conflicts int
		g.Go(func() error {
			for {
				select {
				case <-done:
					return nil
				default:
				}
				_, err := db.Rollback(ctx, ws.Name, 1, Change{Author: "rollback"})
				switch {
				case errors.Is(err, ErrConflict):
					conflicts++
				case err != nil:
					return err
				}
			}
		})
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		// With the writer done, a rollback cannot be raced: it succeeds.
		if _, err := db.Rollback(ctx, ws.Name, 1, Change{Author: "rollback"}); err != nil {
			t.Fatal(err)
		}
		want, _ := db.ResourcesAt(ctx, ws.Name, 1)
		revs, err := db.ListRevisions(ctx, ws.Name, 0, 500)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, rev := range revs {
			if rev.Author != "rollback" {
				continue
			}
			n++
			got, _ := db.ResourcesAt(ctx, ws.Name, rev.Number)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("rollback revision %d holds %d resources, want only those of revision 1", rev.Number, len(got))
			}
		}
		t.Logf("%s: %d rollback revisions among %d, %d gave up, %d retries", db.Dialect(), n, len(revs), conflicts, db.Stats().Retries)
	})
}

// TestPlanApply: a plan equals what Apply then does, diff included, and
// writes nothing.
func TestPlanApply(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		clk := newFakeClock()
		db := openDB(t, url, clk)
		ws, _ := db.EnsureDefault(ctx)
		batches := [][]schema.Resource{
			{upstream("web", "10.0.0.1:80", map[string]string{}), vhost("site", "example.com", "web")},
			{vhost("site", "example.com", "web"), upstream("web", "10.0.0.1:80", nil)},
			{upstream("web", "10.0.0.2:80", map[string]string{"tier": "front"}), upstream("api", "10.0.0.3:80", nil), vhost("site", "example.com", "web")},
		}
		for i, batch := range batches {
			before, _ := db.GetWorkspace(ctx, ws.Name)
			plan, diff, err := db.PlanApply(ctx, ws.Name, batch, alice)
			if err != nil {
				t.Fatalf("batch %d: plan: %v", i, err)
			}
			if w, _ := db.GetWorkspace(ctx, ws.Name); w.Revision != before.Revision {
				t.Fatalf("batch %d: the plan moved the revision from %d to %d", i, before.Revision, w.Revision)
			}
			clk.Advance(time.Second)
			res, err := db.Apply(ctx, ws.Name, batch, alice)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(plan, res) {
				t.Errorf("batch %d: plan %+v, apply %+v", i, plan, res)
			}
			var real []DiffEntry
			if res.Changed {
				real, _ = db.Diff(ctx, ws.Name, res.Revision-1, res.Revision)
			}
			if jsonOf(t, diff) != jsonOf(t, real) {
				t.Errorf("batch %d: planned diff\n %s\nreal diff\n %s", i, jsonOf(t, diff), jsonOf(t, real))
			}
		}

		_, _, err := db.PlanApply(ctx, ws.Name, []schema.Resource{vhost("shop", "shop.example.com", "nope")}, Change{Source: "shop.yaml"})
		var fe *schema.FieldError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) || fe.Field != "spec.locations[0].upstream" || fe.File != "shop.yaml" {
			t.Errorf("plan with a dangling reference: %v", err)
		}
		_, _, err = db.PlanApply(ctx, ws.Name, []schema.Resource{upstream("x", "nope", nil)}, alice)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "spec.servers[0].address") {
			t.Errorf("plan of an invalid document: %v", err)
		}
		dup := []schema.Resource{upstream("x", "10.0.0.1:80", nil), upstream("x", "10.0.0.2:80", nil)}
		if _, _, err := db.PlanApply(ctx, ws.Name, dup, alice); !errors.Is(err, ErrInvalid) {
			t.Errorf("plan with a document twice: %v", err)
		}
		if _, _, err := db.PlanApply(ctx, "nope", batches[0], alice); !errors.Is(err, ErrNotFound) {
			t.Errorf("plan for a missing workspace: %v", err)
		}
	})
}

// TestRevisionResources: the resources at the current revision are exactly
// what ListResources returns, and older revisions show the versions and
// times of then, a recreated resource starting again at version 1.
func TestRevisionResources(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		clk := newFakeClock()
		db := openDB(t, url, clk)
		ws, _ := db.EnsureDefault(ctx)
		t0 := clk.Now()
		step := func(f func() error) {
			t.Helper()
			clk.Advance(time.Minute)
			if err := f(); err != nil {
				t.Fatal(err)
			}
		}
		step(func() error { // 1
			_, err := db.Apply(ctx, ws.Name, []schema.Resource{upstream("web", "10.0.0.1:80", nil), upstream("api", "10.0.0.2:80", nil)}, alice)
			return err
		})
		step(func() error { // 2
			_, err := db.Apply(ctx, ws.Name, []schema.Resource{upstream("web", "10.0.0.3:80", nil)}, alice)
			return err
		})
		step(func() error { // 3
			_, err := db.DeleteResource(ctx, ws.Name, schema.KindUpstream, "api", 0, alice)
			return err
		})
		step(func() error { // 4
			_, err := db.Apply(ctx, ws.Name, []schema.Resource{upstream("api", "10.0.0.4:80", nil)}, alice)
			return err
		})
		live, _ := db.ListResources(ctx, ws.Name, "")
		now, err := db.RevisionResources(ctx, ws.Name, 4)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(now, live) {
			t.Errorf("at the current revision:\n got %+v\nwant %+v", now, live)
		}
		if api := now[0]; api.Version != 1 || !api.CreatedAt.Equal(t0.Add(4*time.Minute)) {
			t.Errorf("recreated api = version %d created %v", api.Version, api.CreatedAt)
		}
		at2, err := db.RevisionResources(ctx, ws.Name, 2)
		if err != nil || len(at2) != 2 {
			t.Fatalf("at revision 2: %+v, %v", at2, err)
		}
		if web := at2[1]; web.Doc.Metadata.Name != "web" || web.Version != 2 ||
			!web.CreatedAt.Equal(t0.Add(time.Minute)) || !web.UpdatedAt.Equal(t0.Add(2*time.Minute)) {
			t.Errorf("web at revision 2 = %+v", web)
		}
		if empty, err := db.RevisionResources(ctx, ws.Name, 0); err != nil || len(empty) != 0 {
			t.Errorf("at revision 0: %+v, %v", empty, err)
		}
		if _, err := db.RevisionResources(ctx, ws.Name, 5); !errors.Is(err, ErrNotFound) {
			t.Errorf("at a future revision: %v", err)
		}
	})
}

func TestListAPITokens(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		clk := newFakeClock()
		db := openDB(t, url, clk)
		for _, u := range []string{"alice", "bob"} {
			if _, err := db.CreateUser(ctx, User{Name: u, PasswordHash: "x"}); err != nil {
				t.Fatal(err)
			}
		}
		exp := clk.Now().Add(time.Hour)
		for _, tok := range []APIToken{
			{Hash: "a1", User: "alice", Kind: TokenKindAPI, Name: "ci", ExpiresAt: exp},
			{Hash: "a2", User: "alice", Kind: TokenKindSession, Name: "login"},
			{Hash: "a3", User: "alice", Kind: TokenKindAPI, Name: "terraform"},
			{Hash: "b1", User: "bob", Kind: TokenKindAPI, Name: "bob's"},
		} {
			clk.Advance(time.Second)
			if _, err := db.CreateAPIToken(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.UseAPIToken(ctx, "a3", clk.Now()); err != nil {
			t.Fatal(err)
		}
		list, err := db.ListAPITokens(ctx, "alice", TokenKindAPI)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 2 || list[0].Hash != "a1" || list[1].Hash != "a3" {
			t.Fatalf("alice's api tokens = %+v", list)
		}
		if !list[0].ExpiresAt.Equal(exp) || !list[0].LastUsedAt.IsZero() || list[0].Name != "ci" || list[0].User != "alice" {
			t.Errorf("first token = %+v", list[0])
		}
		if !list[1].ExpiresAt.IsZero() || !list[1].LastUsedAt.Equal(clk.Now()) {
			t.Errorf("second token = %+v", list[1])
		}
		if list, _ := db.ListAPITokens(ctx, "carol", TokenKindAPI); len(list) != 0 {
			t.Errorf("tokens of a user without any: %+v", list)
		}
	})
}

// TestGuardedKeepsEveryField: the DB Rollback commits through shares every
// field with the DB it comes from but the backend and the retry counter, so
// a hook added to DB later (like OnRevision) still runs on rollbacks.
func TestGuardedKeepsEveryField(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "nxmesh.db"), nil)
	db.onRevision = func(string, int64) {}
	g := db.guarded(func(context.Context, querier) error { return nil })
	a, b := reflect.ValueOf(db).Elem(), reflect.ValueOf(g).Elem()
	for i := range a.NumField() {
		f := a.Type().Field(i)
		switch f.Name {
		case "b", "retries", "writes": // counters: Rollback adds the copy's to the original's
			continue
		}
		fa, fb := a.Field(i), b.Field(i)
		if fa.IsZero() {
			t.Fatalf("DB.%s is zero in the test's DB: set it, or this test cannot tell", f.Name)
		}
		var same bool
		switch fa.Kind() {
		case reflect.Func, reflect.Pointer, reflect.Map, reflect.Chan, reflect.Slice, reflect.UnsafePointer:
			same = fa.Pointer() == fb.Pointer()
		default:
			same = fmt.Sprintf("%#v", fa) == fmt.Sprintf("%#v", fb)
		}
		if !same {
			t.Errorf("DB.%s is not carried over by guarded: add it there", f.Name)
		}
	}
}

// TestRollbackNotifies: a rollback is a committed change like any other,
// so the hub's revision hook hears of it.
func TestRollbackNotifies(t *testing.T) {
	ctx := context.Background()
	var got []int64
	db, err := Open(ctx, Config{URL: filepath.Join(t.TempDir(), "nxmesh.db"), Logger: slog.New(slog.DiscardHandler), SecretKey: testSecretKey,
		OnRevision: func(_ string, rev int64) { got = append(got, rev) }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ws, _ := db.EnsureDefault(ctx)
	db.Apply(ctx, ws.Name, []schema.Resource{upstream("a", "10.0.0.1:80", nil)}, alice)
	db.Apply(ctx, ws.Name, []schema.Resource{upstream("b", "10.0.0.1:80", nil)}, alice)
	if _, err := db.Rollback(ctx, ws.Name, 1, alice); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []int64{1, 2, 3}) {
		t.Errorf("revisions notified: %v, want [1 2 3]", got)
	}
}

// TestAgentFactsByID: facts come back for exactly the existing agents among
// the ids, across more than one chunk, with their workspace and labels.
func TestAgentFactsByID(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		if _, err := db.EnsureDefault(ctx); err != nil {
			t.Fatal(err)
		}
		n := agentFactsChunk + 7
		ids := make([]string, 0, n+1)
		for i := range n {
			a := Agent{ID: fmt.Sprintf("agent-%04d", i), Workspace: DefaultName}
			if i%2 == 0 {
				a.Labels = map[string]string{"n": fmt.Sprint(i)}
			}
			if _, err := db.PutAgent(ctx, a); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, a.ID)
		}
		ids = append(ids, "agent-missing")
		got, err := db.AgentFactsByID(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("got facts of %d agents, want %d", len(got), n)
		}
		if _, ok := got["agent-missing"]; ok {
			t.Error("an unknown id has facts")
		}
		for i := range n {
			f := got[fmt.Sprintf("agent-%04d", i)]
			var want map[string]string
			if i%2 == 0 {
				want = map[string]string{"n": fmt.Sprint(i)}
			}
			if f.Workspace != DefaultName || !reflect.DeepEqual(f.Labels, want) {
				t.Errorf("agent-%04d: %+v, want workspace %s labels %v", i, f, DefaultName, want)
			}
		}
	})
}

// TestListAgentStates: the light listing has every field of ListAgents
// but the timestamps, for the same agents in the same order.
func TestListAgentStates(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		if _, err := db.EnsureDefault(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			a := Agent{ID: fmt.Sprintf("agent-%d", i), Workspace: DefaultName, Relay: "relay-1", AppliedHash: "sha256:aa",
				LastResult: "rejected", LastError: "nginx -t failed", ResultHash: "sha256:bb", ResultOutput: "emerg", LastSeen: time.Now()}
			if i%2 == 0 {
				a.Labels = map[string]string{"region": "eu"}
			}
			if _, err := db.PutAgent(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		full, err := db.ListAgents(ctx, DefaultName)
		if err != nil {
			t.Fatal(err)
		}
		light, err := db.ListAgentStates(ctx, DefaultName)
		if err != nil {
			t.Fatal(err)
		}
		if len(light) != len(full) {
			t.Fatalf("%d agents, want %d", len(light), len(full))
		}
		for i := range full {
			want := full[i]
			want.ResultAt, want.LastSeen, want.CreatedAt = time.Time{}, time.Time{}, time.Time{}
			if !reflect.DeepEqual(light[i], want) {
				t.Errorf("agent %d: %+v, want %+v", i, light[i], want)
			}
		}
	})
}
