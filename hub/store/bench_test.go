package store

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nxmesh/nxmesh/internal/testenv"
	"github.com/nxmesh/nxmesh/schema"
)

// eachBackendB runs a benchmark on both backends, each with a fresh database.
func eachBackendB(b *testing.B, f func(b *testing.B, db *DB)) {
	b.Run("sqlite", func(b *testing.B) { f(b, openDB(b, filepath.Join(b.TempDir(), "nxmesh.db"), nil)) })
	b.Run("postgres", func(b *testing.B) { f(b, openDB(b, testenv.PostgresURL(b), nil)) })
}

// BenchmarkUpdate measures single-resource updates, each its own revision.
func BenchmarkUpdate(b *testing.B) {
	eachBackendB(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		ws, err := db.EnsureDefault(ctx)
		if err != nil {
			b.Fatal(err)
		}
		r, _, err := db.PutResource(ctx, ws.Name, upstream("web", "10.0.0.1:1", nil), 0, alice)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			doc := upstream("web", fmt.Sprintf("10.0.0.1:%d", 2+i%60000), nil)
			if r, _, err = db.PutResource(ctx, ws.Name, doc, r.Version, alice); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "updates/s")
	})
}

// BenchmarkApply1000 measures a batch of 1,000 changed resources applied
// as one revision.
func BenchmarkApply1000(b *testing.B) {
	eachBackendB(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		ws, err := db.EnsureDefault(ctx)
		if err != nil {
			b.Fatal(err)
		}
		batch := func(i int) []schema.Resource {
			docs := make([]schema.Resource, 1000)
			for j := range docs {
				docs[j] = upstream(fmt.Sprintf("up-%04d", j), fmt.Sprintf("10.0.%d.%d:%d", j/250, j%250+1, 1+i%60000), map[string]string{"batch": "x"})
			}
			return docs
		}
		if _, err := db.Apply(ctx, ws.Name, batch(0), alice); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 1; b.Loop(); i++ {
			b.StopTimer()
			docs := batch(i)
			b.StartTimer()
			res, err := db.Apply(ctx, ws.Name, docs, alice)
			if err != nil {
				b.Fatal(err)
			}
			if !res.Changed {
				b.Fatal("batch changed nothing")
			}
		}
		b.ReportMetric(b.Elapsed().Seconds()*1000/float64(b.N), "ms/batch")
	})
}

// BenchmarkUpdateAgentStatus measures what the hub writes while a push is
// acked: one batch of 2,500 agents' results (the fleet writes at most
// every 250 ms), reported per agent.
func BenchmarkUpdateAgentStatus(b *testing.B) {
	eachBackendB(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		ws, err := db.EnsureDefault(ctx)
		if err != nil {
			b.Fatal(err)
		}
		const n = 2500
		sts := make([]AgentStatus, n)
		for i := range sts {
			id := fmt.Sprintf("agent-%05d", i)
			if _, err := db.PutAgent(ctx, Agent{ID: id, Workspace: ws.Name}); err != nil {
				b.Fatal(err)
			}
			sts[i] = AgentStatus{ID: id, Relay: "relay-1", LastResult: "applied"}
		}
		b.ResetTimer()
		for i := 0; b.Loop(); i++ {
			now := time.Now()
			for j := range sts {
				sts[j].AppliedHash = fmt.Sprintf("%064d", i)
				sts[j].ResultHash, sts[j].ResultAt, sts[j].LastSeen = sts[j].AppliedHash, now, now
			}
			if err := db.UpdateAgentStatus(ctx, sts); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "us/agent")
	})
}
