package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
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
// acked: a flush of 4,000 results from a fleet of 20,000 agents, in the
// order they arrived (shuffled) or in key order (sorted, as the fleet's
// writer sends them), in transactions of 1,000 (the fleet's statusBatch),
// reported per agent.
func BenchmarkUpdateAgentStatus(b *testing.B) {
	eachBackendB(b, func(b *testing.B, db *DB) {
		ctx := context.Background()
		ws, err := db.EnsureDefault(ctx)
		if err != nil {
			b.Fatal(err)
		}
		const fleet, flush, batch = 20000, 4000, 1000
		ids := make([]string, fleet)
		for i := range ids {
			ids[i] = fmt.Sprintf("agent-%05d", i)
			if _, err := db.PutAgent(ctx, Agent{ID: ids[i], Workspace: ws.Name}); err != nil {
				b.Fatal(err)
			}
		}
		for _, sorted := range []bool{false, true} {
			b.Run(map[bool]string{false: "shuffled", true: "sorted"}[sorted], func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					now, hash := time.Now(), fmt.Sprintf("%064d", i)
					sts := make([]AgentStatus, flush)
					for j, k := range rand.Perm(fleet)[:flush] {
						sts[j] = AgentStatus{ID: ids[k], Relay: "relay-1", AppliedHash: hash, LastSeen: now,
							LastResult: "applied", ResultHash: hash, ResultAt: now}
					}
					if sorted {
						slices.SortFunc(sts, func(a, b AgentStatus) int { return strings.Compare(a.ID, b.ID) })
					}
					for chunk := range slices.Chunk(sts, batch) {
						if err := db.UpdateAgentStatus(ctx, chunk); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*flush), "us/agent")
			})
		}
	})
}
