package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/schema"
	"golang.org/x/sync/errgroup"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// fakeClock is a clock the test moves by hand; safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// eachBackend runs f as subtests "sqlite" and "postgres", each given the
// URL of a fresh, empty database.
func eachBackend(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("sqlite", func(t *testing.T) { f(t, filepath.Join(t.TempDir(), "nxmesh.db")) })
	t.Run("postgres", func(t *testing.T) { f(t, testenv.PostgresURL(t)) })
}

// testSecretKey is the installation's secret key in the store's tests.
var testSecretKey = bytes.Repeat([]byte{7}, 32)

func openDB(t testing.TB, url string, clk *fakeClock) *DB {
	t.Helper()
	cfg := Config{URL: url, MaxConns: 20, Logger: slog.New(slog.DiscardHandler), SecretKey: testSecretKey}
	if clk != nil {
		cfg.Now = clk.Now
	}
	db, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func upstream(name, addr string, labels map[string]string) schema.Resource {
	return schema.Resource{
		APIVersion: schema.APIVersion,
		Kind:       schema.KindUpstream,
		Metadata:   schema.Metadata{Name: name, Labels: labels},
		Spec:       &schema.UpstreamSpec{Servers: []schema.UpstreamServer{{Address: addr}}},
	}
}

func vhost(name, host, up string) schema.Resource {
	return schema.Resource{
		APIVersion: schema.APIVersion,
		Kind:       schema.KindVirtualHost,
		Metadata:   schema.Metadata{Name: name},
		Spec: &schema.VirtualHostSpec{
			ServerNames: []string{host},
			Locations:   []schema.Location{{Path: "/", Upstream: up}},
		},
	}
}

var alice = Change{Author: "alice", Message: "test"}

// TestConcurrentWriters: read-modify-write increments from 16 writers are
// never lost, and revisions are strictly increasing without gaps.
func TestConcurrentWriters(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		ws, err := db.EnsureDefault(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.PutResource(ctx, ws.Name, upstream("counter", "10.0.0.1:80", map[string]string{"n": "0"}), 0, alice); err != nil {
			t.Fatal(err)
		}
		const writers, each = 16, 10
		var g errgroup.Group
		for w := range writers {
			g.Go(func() error {
				for done := 0; done < each; {
					r, err := db.GetResource(ctx, ws.Name, schema.KindUpstream, "counter")
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(r.Doc.Metadata.Labels["n"])
					doc := r.Doc
					doc.Metadata.Labels = map[string]string{"n": strconv.Itoa(n + 1)}
					_, _, err = db.PutResource(ctx, ws.Name, doc, r.Version, Change{Author: fmt.Sprintf("w%d", w)})
					if errors.Is(err, ErrConflict) {
						continue
					}
					if err != nil {
						return err
					}
					done++
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		r, err := db.GetResource(ctx, ws.Name, schema.KindUpstream, "counter")
		if err != nil {
			t.Fatal(err)
		}
		const total = writers * each
		if got := r.Doc.Metadata.Labels["n"]; got != strconv.Itoa(total) {
			t.Errorf("counter = %s, want %d (lost updates)", got, total)
		}
		if r.Version != total+1 {
			t.Errorf("version = %d, want %d", r.Version, total+1)
		}
		revs, err := db.ListRevisions(ctx, ws.Name, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(revs) != total+1 {
			t.Fatalf("%d revisions, want %d", len(revs), total+1)
		}
		for i, rev := range revs {
			if want := int64(total + 1 - i); rev.Number != want {
				t.Fatalf("revisions[%d] = %d, want %d (gap or duplicate)", i, rev.Number, want)
			}
		}
		w, err := db.GetWorkspace(ctx, ws.Name)
		if err != nil {
			t.Fatal(err)
		}
		if w.Revision != total+1 {
			t.Errorf("workspace revision = %d, want %d", w.Revision, total+1)
		}
		t.Logf("%s: %d transaction retries", db.Dialect(), db.Stats().Retries)
		if db.Dialect() == schema.DialectPostgres && db.Stats().Retries == 0 {
			t.Errorf("no serialization failure was retried; the test did not exercise the retry path")
		}
	})
}

func TestStaleWriteConflicts(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		ws, _ := db.EnsureDefault(ctx)
		r1, rev1, err := db.PutResource(ctx, ws.Name, upstream("web", "10.0.0.1:80", nil), 0, alice)
		if err != nil {
			t.Fatal(err)
		}
		if r1.Version != 1 || rev1.Number != 1 || rev1.Author != "alice" {
			t.Fatalf("first put: version %d revision %+v", r1.Version, rev1)
		}
		r2, _, err := db.PutResource(ctx, ws.Name, upstream("web", "10.0.0.2:80", nil), 1, alice)
		if err != nil || r2.Version != 2 {
			t.Fatalf("second put: version %d, %v", r2.Version, err)
		}
		for _, tc := range []struct {
			name     string
			expected int64
		}{{"stale", 1}, {"create existing", 0}, {"future", 7}} {
			_, _, err := db.PutResource(ctx, ws.Name, upstream("web", "10.0.0.3:80", nil), tc.expected, alice)
			var ce *ConflictError
			if !errors.Is(err, ErrConflict) || !errors.As(err, &ce) || ce.Expected != tc.expected || ce.Actual != 2 || ce.Name != "web" {
				t.Errorf("%s: err = %v, want conflict expected %d actual 2", tc.name, err, tc.expected)
			}
		}
		if _, err := db.DeleteResource(ctx, ws.Name, schema.KindUpstream, "web", 1, alice); !errors.Is(err, ErrConflict) {
			t.Errorf("stale delete: %v, want ErrConflict", err)
		}
		if _, _, err := db.PutResource(ctx, ws.Name, upstream("api", "10.0.0.1:80", nil), 3, alice); !errors.Is(err, ErrConflict) {
			t.Errorf("update of a missing resource: %v, want ErrConflict", err)
		}
		if _, err := db.DeleteResource(ctx, ws.Name, schema.KindUpstream, "api", 0, alice); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete of a missing resource: %v, want ErrNotFound", err)
		}
		if _, _, err := db.PutResource(ctx, "nope", upstream("api", "10.0.0.1:80", nil), 0, alice); !errors.Is(err, ErrNotFound) {
			t.Errorf("put into a missing workspace: %v, want ErrNotFound", err)
		}
		if w, _ := db.GetWorkspace(ctx, ws.Name); w.Revision != 2 {
			t.Errorf("revision = %d after failed writes, want 2", w.Revision)
		}
	})
}

// TestLeaseExclusive: two store instances (two hubs) with many contenders
// and a fake clock never have two holders of one lease at the same time.
func TestLeaseExclusive(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		clk := newFakeClock()
		dbs := []*DB{openDB(t, url, clk), openDB(t, url, clk)}
		const ttl = time.Second
		type hold struct {
			holder     string
			start, end time.Time
		}
		var (
			mu    sync.Mutex // guards holds
			holds []hold
		)
		var g errgroup.Group
		for c := range 8 {
			db := dbs[c%2]
			holder := fmt.Sprintf("hub-%d", c)
			g.Go(func() error {
				for range 60 {
					clk.Advance(100 * time.Millisecond)
					l, err := db.AcquireLease(ctx, "rollouts", holder, ttl)
					if errors.Is(err, ErrLeaseHeld) {
						continue
					}
					if err != nil {
						return err
					}
					if l.Holder != holder {
						return fmt.Errorf("acquired lease names holder %q, want %q", l.Holder, holder)
					}
					mu.Lock()
					holds = append(holds, hold{holder, l.ExpiresAt.Add(-ttl), l.ExpiresAt})
					mu.Unlock()
					// Renew once, as a lease holder does while it works.
					if l, err = db.RenewLease(ctx, "rollouts", holder, ttl); err == nil {
						mu.Lock()
						holds = append(holds, hold{holder, l.ExpiresAt.Add(-ttl), l.ExpiresAt})
						mu.Unlock()
					} else if !errors.Is(err, ErrLeaseHeld) {
						return err
					}
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatal(err)
		}
		holders := map[string]bool{}
		for i, a := range holds {
			holders[a.holder] = true
			for _, b := range holds[i+1:] {
				if a.holder != b.holder && a.start.Before(b.end) && b.start.Before(a.end) {
					t.Fatalf("%s held [%v, %v) while %s held [%v, %v)", a.holder, a.start, a.end, b.holder, b.start, b.end)
				}
			}
		}
		if len(holders) < 2 {
			t.Errorf("only %d distinct holders in %d holds; the lease never changed hands", len(holders), len(holds))
		}
		t.Logf("%d holds by %d holders", len(holds), len(holders))

		// Release hands the lease over immediately; renew after losing it fails.
		l, err := dbs[0].GetLease(ctx, "rollouts")
		if err != nil {
			t.Fatal(err)
		}
		clk.Advance(2 * ttl)
		if _, err := dbs[0].AcquireLease(ctx, "rollouts", "a", ttl); err != nil {
			t.Fatal(err)
		}
		if _, err := dbs[1].RenewLease(ctx, "rollouts", l.Holder, ttl); l.Holder != "a" && !errors.Is(err, ErrLeaseHeld) {
			t.Errorf("renew by the previous holder: %v, want ErrLeaseHeld", err)
		}
		if _, err := dbs[1].AcquireLease(ctx, "rollouts", "b", ttl); !errors.Is(err, ErrLeaseHeld) {
			t.Errorf("acquire of a held lease: %v, want ErrLeaseHeld", err)
		}
		if err := dbs[0].ReleaseLease(ctx, "rollouts", "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := dbs[1].AcquireLease(ctx, "rollouts", "b", ttl); err != nil {
			t.Errorf("acquire after release: %v", err)
		}
	})
}

func TestMigrations(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		// Hubs starting at the same moment on an empty database.
		var g errgroup.Group
		for range 8 {
			g.Go(func() error {
				db, err := Open(ctx, Config{URL: url, Logger: slog.New(slog.DiscardHandler), SecretKey: testSecretKey})
				if err != nil {
					return err
				}
				return db.Close()
			})
		}
		if err := g.Wait(); err != nil {
			t.Fatalf("concurrent open: %v", err)
		}
		db := openDB(t, url, nil)
		if _, err := db.EnsureDefault(ctx); err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.PutResource(ctx, DefaultName, upstream("web", "10.0.0.1:80", nil), 0, alice); err != nil {
			t.Fatal(err)
		}
		// Running the migrations again is a no-op that keeps the data.
		if err := db.migrate(ctx); err != nil {
			t.Fatalf("second migrate: %v", err)
		}
		db2 := openDB(t, url, nil)
		if _, err := db2.GetResource(ctx, DefaultName, schema.KindUpstream, "web"); err != nil {
			t.Fatalf("after reopen: %v", err)
		}
		ms, _ := loadMigrations(db.Dialect())
		var n, max int64
		err := db.tx(ctx, false, func(q querier) error {
			return q.queryRow(ctx, "SELECT COUNT(*), MAX(version) FROM schema_migrations").Scan(&n, &max)
		})
		if err != nil || n != int64(len(ms)) || max != int64(len(ms)) {
			t.Fatalf("schema_migrations: %d rows, max %d, %v; want %d", n, max, err, len(ms))
		}

		// A database migrated by a newer binary is refused.
		err = db.tx(ctx, true, func(q querier) error {
			_, err := q.exec(ctx, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", max+7, time.Now().UTC())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(ctx, Config{URL: url, Logger: slog.New(slog.DiscardHandler), SecretKey: testSecretKey})
		var tooNew *SchemaTooNewError
		if !errors.Is(err, ErrSchemaTooNew) || !errors.As(err, &tooNew) || tooNew.Database != max+7 || tooNew.Binary != max {
			t.Fatalf("open of a newer schema: %v, want SchemaTooNewError %d > %d", err, max+7, max)
		}
		if msg := err.Error(); !strings.Contains(msg, strconv.FormatInt(max+7, 10)) || !strings.Contains(msg, "upgrade") {
			t.Errorf("error %q should name both versions and say to upgrade", msg)
		}
	})
}

func TestApplyInvalidChangesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		ws, _ := db.EnsureDefault(ctx)
		if _, err := db.Apply(ctx, ws.Name, []schema.Resource{upstream("web", "10.0.0.1:80", nil)}, alice); err != nil {
			t.Fatal(err)
		}
		before, _ := db.ListResources(ctx, ws.Name, "")
		batch := []schema.Resource{
			upstream("web", "10.0.0.9:80", nil),
			upstream("api", "not an address", nil),
			vhost("site", "example.com", "web"),
		}
		_, err := db.Apply(ctx, ws.Name, batch, Change{Author: "bob", Source: "batch.yaml"})
		var fe *schema.FieldError
		if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) {
			t.Fatalf("apply: %v, want ErrInvalid with a schema.FieldError", err)
		}
		if !strings.Contains(err.Error(), "spec.servers[0].address") {
			t.Errorf("error %q does not name the field", err)
		}
		// A set-level error (a reference to a missing upstream) is refused too.
		_, err = db.Apply(ctx, ws.Name, []schema.Resource{vhost("site", "example.com", "nope")}, alice)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "spec.locations[0].upstream") {
			t.Errorf("apply with a dangling reference: %v", err)
		}
		if _, err := db.DeleteResource(ctx, ws.Name, schema.KindUpstream, "web", 0, alice); err != nil {
			t.Fatal(err) // nothing refers to it yet
		}
		if _, err := db.Apply(ctx, ws.Name, batch[:1], alice); err != nil {
			t.Fatal(err)
		}
		if _, err := db.Apply(ctx, ws.Name, batch[2:], alice); err != nil {
			t.Fatal(err)
		}
		// Deleting an upstream a virtual host uses is refused.
		if _, err := db.DeleteResource(ctx, ws.Name, schema.KindUpstream, "web", 0, alice); !errors.Is(err, ErrInvalid) {
			t.Errorf("delete of a referenced upstream: %v, want ErrInvalid", err)
		}
		w, _ := db.GetWorkspace(ctx, ws.Name)
		if w.Revision != 4 {
			t.Errorf("revision = %d, want 4", w.Revision)
		}
		_ = before
	})
}

func TestApplyHistoryDiff(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		clk := newFakeClock()
		db := openDB(t, url, clk)
		ws, _ := db.EnsureDefault(ctx)
		web, site := upstream("web", "10.0.0.1:80", map[string]string{"tier": "front"}), vhost("site", "example.com", "web")

		res, err := db.Apply(ctx, ws.Name, []schema.Resource{web, site}, alice)
		if err != nil {
			t.Fatal(err)
		}
		want := []Applied{{schema.KindUpstream, "web", Created, 1}, {schema.KindVirtualHost, "site", Created, 1}}
		if !res.Changed || res.Revision != 1 || !reflect.DeepEqual(res.Resources, want) {
			t.Fatalf("first apply = %+v", res)
		}
		clk.Advance(time.Minute)
		// The same documents again change nothing and create no revision.
		res, err = db.Apply(ctx, ws.Name, []schema.Resource{site, web}, alice)
		if err != nil {
			t.Fatal(err)
		}
		want = []Applied{{schema.KindVirtualHost, "site", Unchanged, 1}, {schema.KindUpstream, "web", Unchanged, 1}}
		if res.Changed || res.Revision != 1 || !reflect.DeepEqual(res.Resources, want) {
			t.Fatalf("no-op apply = %+v", res)
		}
		web2 := upstream("web", "10.0.0.2:80", map[string]string{"tier": "front"})
		res, err = db.Apply(ctx, ws.Name, []schema.Resource{web2, site}, Change{Author: "bob", Message: "move web"})
		if err != nil {
			t.Fatal(err)
		}
		want = []Applied{{schema.KindUpstream, "web", Updated, 2}, {schema.KindVirtualHost, "site", Unchanged, 1}}
		if !res.Changed || res.Revision != 2 || !reflect.DeepEqual(res.Resources, want) {
			t.Fatalf("update apply = %+v", res)
		}
		r, err := db.GetResource(ctx, ws.Name, schema.KindUpstream, "web")
		if err != nil {
			t.Fatal(err)
		}
		if !r.CreatedAt.Equal(clk.Now().Add(-time.Minute)) || !r.UpdatedAt.Equal(clk.Now()) {
			t.Errorf("timestamps created %v updated %v, clock %v", r.CreatedAt, r.UpdatedAt, clk.Now())
		}
		clk.Advance(time.Minute)
		if _, err := db.Apply(ctx, ws.Name, []schema.Resource{vhost("site", "example.com", "api"), upstream("api", "10.0.0.3:80", nil)}, alice); err != nil {
			t.Fatal(err)
		}
		if _, err := db.DeleteResource(ctx, ws.Name, schema.KindUpstream, "web", 2, alice); err != nil {
			t.Fatal(err)
		}

		// The set at every revision.
		site2 := vhost("site", "example.com", "api")
		api := upstream("api", "10.0.0.3:80", nil)
		sets := map[int64][]schema.Resource{
			0: nil,
			1: {web, site},
			2: {web2, site},
			3: {api, web2, site2},
			4: {api, site2},
		}
		for rev, want := range sets {
			got, err := db.ResourcesAt(ctx, ws.Name, rev)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("set at revision %d:\n got %s\nwant %s", rev, jsonOf(t, got), jsonOf(t, want))
			}
		}
		if _, err := db.ResourcesAt(ctx, ws.Name, 5); !errors.Is(err, ErrNotFound) {
			t.Errorf("set at a future revision: %v, want ErrNotFound", err)
		}

		d, err := db.Diff(ctx, ws.Name, 1, 4)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range d {
			got = append(got, fmt.Sprintf("%s %s/%s old=%v new=%v", e.Op, e.Kind, e.Name, e.Old != nil, e.New != nil))
		}
		wantDiff := []string{
			"added Upstream/api old=false new=true",
			"removed Upstream/web old=true new=false",
			"changed VirtualHost/site old=true new=true",
		}
		if !reflect.DeepEqual(got, wantDiff) {
			t.Errorf("diff 1..4 = %q, want %q", got, wantDiff)
		}
		if d[2].Old.Spec.(*schema.VirtualHostSpec).Locations[0].Upstream != "web" || d[2].New.Spec.(*schema.VirtualHostSpec).Locations[0].Upstream != "api" {
			t.Errorf("changed entry carries the wrong specs: %+v", d[2])
		}

		// Revisions, newest first, paginated.
		page, err := db.ListRevisions(ctx, ws.Name, 0, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) != 3 || page[0].Number != 4 || page[2].Number != 2 {
			t.Fatalf("first page = %+v", page)
		}
		page, _ = db.ListRevisions(ctx, ws.Name, page[2].Number, 3)
		if len(page) != 1 || page[0].Number != 1 {
			t.Fatalf("second page = %+v", page)
		}
		rev2, err := db.GetRevision(ctx, ws.Name, 2)
		if err != nil || rev2.Author != "bob" || rev2.Message != "move web" || !rev2.CreatedAt.Equal(clk.Now().Add(-time.Minute)) {
			t.Errorf("revision 2 = %+v, %v", rev2, err)
		}
	})
}

func jsonOf(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestResourceSetJSONRoundTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		db := openDB(t, url, nil)
		ws, _ := db.EnsureDefault(ctx)
		maxFails := 3
		docs := []schema.Resource{
			{
				APIVersion: schema.APIVersion, Kind: schema.KindUpstream,
				Metadata: schema.Metadata{Name: "web", Labels: map[string]string{"env": "prod", "team": "edge"}},
				Spec: &schema.UpstreamSpec{
					Servers:       []schema.UpstreamServer{{Address: "10.0.0.1:8080", Weight: 5, MaxFails: &maxFails, FailTimeout: "10s"}, {Address: "[::1]:80", Backup: true}},
					LoadBalancing: schema.LeastConn, Keepalive: 32,
					Retries: &schema.Retries{Tries: 2, Timeout: "5s", On: []string{"error", "timeout"}},
				},
			},
			vhost("site", "example.com", "web"),
		}
		if _, err := db.Apply(ctx, ws.Name, docs, alice); err != nil {
			t.Fatal(err)
		}
		set, err := db.ResourcesAt(ctx, ws.Name, 1)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(set)
		if err != nil {
			t.Fatal(err)
		}
		var back []schema.Resource
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		sort.Slice(docs, func(i, j int) bool { return docs[i].Kind < docs[j].Kind })
		if !reflect.DeepEqual(back, docs) || !reflect.DeepEqual(set, docs) {
			t.Errorf("round trip:\n got %s\nwant %s", b, jsonOf(t, docs))
		}
	})
}

func TestOrganizationsAgentsAudit(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		clk := newFakeClock()
		db := openDB(t, url, clk)
		for range 2 {
			ws, err := db.EnsureDefault(ctx)
			if err != nil || ws.Name != DefaultName || ws.Organization != DefaultName {
				t.Fatalf("EnsureDefault = %+v, %v", ws, err)
			}
		}
		if _, err := db.CreateOrganization(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateOrganization(ctx, "acme"); !errors.Is(err, ErrConflict) {
			t.Errorf("duplicate organization: %v", err)
		}
		if _, err := db.CreateWorkspace(ctx, "acme", "prod"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.CreateWorkspace(ctx, "acme", "default"); !errors.Is(err, ErrConflict) {
			t.Errorf("duplicate workspace: %v", err)
		}
		if _, err := db.CreateWorkspace(ctx, "nope", "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("workspace in a missing organization: %v", err)
		}
		if _, err := db.GetWorkspace(ctx, "x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("missing workspace: %v", err)
		}
		orgs, _ := db.ListOrganizations(ctx)
		wss, _ := db.ListWorkspaces(ctx, "acme")
		if len(orgs) != 2 || len(wss) != 1 || wss[0].Name != "prod" {
			t.Errorf("orgs %+v workspaces %+v", orgs, wss)
		}
		if o, err := db.GetOrganization(ctx, "acme"); err != nil || !o.CreatedAt.Equal(clk.Now()) {
			t.Errorf("organization = %+v, %v", o, err)
		}

		a := Agent{ID: "agent-1", Workspace: "prod", Labels: map[string]string{"region": "eu"}, Relay: "relay-eu-1"}
		got, err := db.PutAgent(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		a.CreatedAt = clk.Now()
		if !reflect.DeepEqual(got, a) {
			t.Errorf("put agent = %+v, want %+v", got, a)
		}
		clk.Advance(time.Hour)
		a.AppliedHash, a.LastResult, a.LastSeen = "sha256:ab", "ack", clk.Now()
		if got, err = db.PutAgent(ctx, a); err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("update agent = %+v, %v; want %+v", got, err, a)
		}
		if got, err = db.GetAgent(ctx, "agent-1"); err != nil || !reflect.DeepEqual(got, a) {
			t.Errorf("get agent = %+v, %v", got, err)
		}
		if list, err := db.ListAgents(ctx, "prod"); err != nil || len(list) != 1 {
			t.Errorf("list agents = %+v, %v", list, err)
		}
		if err := db.DeleteAgent(ctx, "agent-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.GetAgent(ctx, "agent-1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted agent: %v", err)
		}
		if err := db.DeleteAgent(ctx, "agent-1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete twice: %v", err)
		}

		for i := range 3 {
			clk.Advance(time.Second)
			if _, err := db.AppendAudit(ctx, AuditEvent{Workspace: "prod", Actor: "alice", Action: fmt.Sprintf("act%d", i), Detail: []byte(`{"n":1}`)}); err != nil {
				t.Fatal(err)
			}
		}
		evs, err := db.ListAudit(ctx, "prod", time.Time{}, 2)
		if err != nil || len(evs) != 2 || evs[0].Action != "act2" || evs[1].Action != "act1" {
			t.Fatalf("audit page 1 = %+v, %v", evs, err)
		}
		var detail map[string]int
		if err := json.Unmarshal(evs[0].Detail, &detail); err != nil || detail["n"] != 1 {
			t.Errorf("audit detail %s: %v", evs[0].Detail, err)
		}
		evs, _ = db.ListAudit(ctx, "prod", evs[1].CreatedAt, 2)
		if len(evs) != 1 || evs[0].Action != "act0" {
			t.Errorf("audit page 2 = %+v", evs)
		}
	})
}
