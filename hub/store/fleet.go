package store

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// AgentStatus is what a hub learned about one agent from its relay: the
// fields UpdateAgentStatus writes. Hubs collect these in memory and write
// them in batches, so that heartbeats do not become one write each.
type AgentStatus struct {
	ID          string
	Relay       string // relay of the live session
	AppliedHash string
	// LastResult, LastError, ResultHash, ResultOutput and ResultAt are the
	// agent's last apply result; an empty LastResult keeps the stored one.
	LastResult   string
	LastError    string
	ResultHash   string
	ResultOutput string
	ResultAt     time.Time
	LastSeen     time.Time
}

// Relay is a relay with a live session to some hub.
type Relay struct {
	ID          string
	Hub         string // hub id holding the session
	Agents      int    // live agent sessions on the relay
	ConnectedAt time.Time
	LastSeen    time.Time // refreshed by its hub while the session lives
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return ts(t)
}

// UpdateAgentStatus writes the status of many agents in one transaction.
// Agents that no longer exist (deleted meanwhile) are skipped.
func (db *DB) UpdateAgentStatus(ctx context.Context, sts []AgentStatus) error {
	if len(sts) == 0 {
		return nil
	}
	var plain, withResult [][]any
	for _, s := range sts {
		if s.LastResult == "" {
			plain = append(plain, []any{s.ID, s.Relay, s.AppliedHash, nullTime(s.LastSeen)})
			continue
		}
		withResult = append(withResult, []any{s.ID, s.Relay, s.AppliedHash, nullTime(s.LastSeen),
			s.LastResult, s.LastError, s.ResultHash, s.ResultOutput, nullTime(s.ResultAt)})
	}
	err := db.tx(ctx, true, func(q querier) error {
		if err := q.execMany(ctx, `UPDATE agents SET relay = $2, applied_hash = $3, last_seen = $4 WHERE id = $1`, plain); err != nil {
			return err
		}
		return q.execMany(ctx, `UPDATE agents SET relay = $2, applied_hash = $3, last_seen = $4,
			last_result = $5, last_error = $6, result_hash = $7, result_output = $8, result_at = $9 WHERE id = $1`, withResult)
	})
	if err != nil {
		return fmt.Errorf("update status of %d agents: %w", len(sts), err)
	}
	return nil
}

// DisconnectAgents records that agents' sessions through relay ended at at.
// An agent whose record names another relay (it reconnected elsewhere,
// perhaps through another hub) is left alone.
func (db *DB) DisconnectAgents(ctx context.Context, relay string, ids []string, at time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([][]any, len(ids))
	for i, id := range ids {
		args[i] = []any{id, relay, ts(at)}
	}
	err := db.tx(ctx, true, func(q querier) error {
		return q.execMany(ctx, `UPDATE agents SET relay = '', last_seen = $3 WHERE id = $1 AND relay = $2`, args)
	})
	if err != nil {
		return fmt.Errorf("disconnect %d agents of relay %q: %w", len(ids), relay, err)
	}
	return nil
}

// PutRelay records or refreshes a relay's live session.
func (db *DB) PutRelay(ctx context.Context, r Relay) error {
	err := db.tx(ctx, true, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO relays (id, hub, agents, connected_at, last_seen) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (id) DO UPDATE SET hub = excluded.hub, agents = excluded.agents,
				connected_at = excluded.connected_at, last_seen = excluded.last_seen`,
			r.ID, r.Hub, int64(r.Agents), ts(r.ConnectedAt), ts(r.LastSeen))
		return err
	})
	if err != nil {
		return fmt.Errorf("put relay %q: %w", r.ID, err)
	}
	return nil
}

// DeleteRelay removes the record of relay id if hub still holds it.
func (db *DB) DeleteRelay(ctx context.Context, id, hub string) error {
	err := db.tx(ctx, true, func(q querier) error {
		_, err := q.exec(ctx, `DELETE FROM relays WHERE id = $1 AND hub = $2`, id, hub)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete relay %q: %w", id, err)
	}
	return nil
}

// ListRelays returns every relay record by id, live or stale: callers judge
// liveness by LastSeen.
func (db *DB) ListRelays(ctx context.Context) ([]Relay, error) {
	var out []Relay
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		rs, err := q.query(ctx, `SELECT id, hub, agents, connected_at, last_seen FROM relays ORDER BY id`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var r Relay
			var n int64
			if err := rs.Scan(&r.ID, &r.Hub, &n, &r.ConnectedAt, &r.LastSeen); err != nil {
				return err
			}
			r.Agents = int(n)
			r.ConnectedAt, r.LastSeen = r.ConnectedAt.UTC(), r.LastSeen.UTC()
			out = append(out, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list relays: %w", err)
	}
	return out, nil
}

// WorkspaceRevisions returns every workspace's newest revision number. Hubs
// poll it to notice changes other hubs committed.
func (db *DB) WorkspaceRevisions(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	err := db.tx(ctx, false, func(q querier) error {
		clear(out)
		rs, err := q.query(ctx, `SELECT name, revision FROM workspaces`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var name string
			var rev int64
			if err := rs.Scan(&name, &rev); err != nil {
				return err
			}
			out[name] = rev
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("workspace revisions: %w", err)
	}
	return out, nil
}

// RevokedIdentitiesSince returns the identities (SPIFFE URIs) with a
// certificate revoked after since. Hubs poll it to cut sessions that a
// deletion on another hub revoked.
func (db *DB) RevokedIdentitiesSince(ctx context.Context, since time.Time) ([]string, error) {
	var out []string
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		rs, err := q.query(ctx, `SELECT DISTINCT c.identity FROM revocations r JOIN certificates c ON c.serial = r.serial
			WHERE r.revoked_at > $1`, ts(since))
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var id string
			if err := rs.Scan(&id); err != nil {
				return err
			}
			out = append(out, id)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("recent revocations: %w", err)
	}
	return out, nil
}

// AgentFacts is what a hub needs to compute an agent's bundle: its
// workspace and labels.
type AgentFacts struct {
	Workspace string
	Labels    map[string]string
}

// agentFactsChunk bounds the ids of one query: SQLite allows 32,766
// parameters, and short statements plan fast on every database.
const agentFactsChunk = 500

// AgentFactsByID returns the workspace and labels of the agents among ids
// that exist; an unknown id is absent from the map. It reads only what the
// fleet needs, in chunks, so that learning thousands of newly connected
// agents costs one indexed read per chunk, not a listing of the
// workspace for each batch of them.
func (db *DB) AgentFactsByID(ctx context.Context, ids []string) (map[string]AgentFacts, error) {
	out := make(map[string]AgentFacts, len(ids))
	for chunk := range slices.Chunk(ids, agentFactsChunk) {
		var b strings.Builder
		args := make([]any, len(chunk))
		b.WriteString("SELECT id, workspace, labels FROM agents WHERE id IN (")
		for i, id := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "$%d", i+1)
			args[i] = id
		}
		b.WriteString(")")
		got := map[string]AgentFacts{}
		err := db.tx(ctx, false, func(q querier) error {
			clear(got)
			rs, err := q.query(ctx, b.String(), args...)
			if err != nil {
				return err
			}
			defer rs.Close()
			for rs.Next() {
				var (
					id, ws string
					labels []byte
				)
				if err := rs.Scan(&id, &ws, &labels); err != nil {
					return err
				}
				var f AgentFacts
				f.Workspace = ws
				if err := json.Unmarshal(labels, &f.Labels); err != nil {
					return fmt.Errorf("agent %q labels: %w", id, err)
				}
				if len(f.Labels) == 0 {
					f.Labels = nil
				}
				got[id] = f
			}
			return rs.Err()
		})
		if err != nil {
			return nil, fmt.Errorf("read %d agents: %w", len(chunk), err)
		}
		maps.Copy(out, got)
	}
	return out, nil
}
