package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"
)

const agentColumns = "id, workspace, labels, relay, applied_hash, last_result, last_error, last_seen, created_at, result_hash, result_output, result_at"

func scanAgent(r row) (Agent, error) {
	var (
		a      Agent
		labels []byte
		seen   sql.NullTime
		resAt  sql.NullTime
	)
	if err := r.Scan(&a.ID, &a.Workspace, &labels, &a.Relay, &a.AppliedHash, &a.LastResult, &a.LastError, &seen, &a.CreatedAt,
		&a.ResultHash, &a.ResultOutput, &resAt); err != nil {
		return Agent{}, err
	}
	if err := json.Unmarshal(labels, &a.Labels); err != nil {
		return Agent{}, fmt.Errorf("agent %q labels: %w", a.ID, err)
	}
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if seen.Valid {
		a.LastSeen = seen.Time.UTC()
	}
	if resAt.Valid {
		a.ResultAt = resAt.Time.UTC()
	}
	a.CreatedAt = a.CreatedAt.UTC()
	return a, nil
}

// PutAgent creates or replaces an agent record. CreatedAt is kept from the
// existing record, or set to now for a new one.
func (db *DB) PutAgent(ctx context.Context, a Agent) (Agent, error) {
	if a.ID == "" {
		return Agent{}, fmt.Errorf("put agent: %w: empty id", ErrInvalid)
	}
	labels := a.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	lj, err := json.Marshal(labels)
	if err != nil {
		return Agent{}, err
	}
	seen, resAt := nullTime(a.LastSeen), nullTime(a.ResultAt)
	var out Agent
	err = db.tx(ctx, true, func(q querier) error {
		if _, err := workspaceRevision(ctx, q, a.Workspace); err != nil {
			return err
		}
		if _, err := q.exec(ctx, `INSERT INTO agents (`+agentColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (id) DO UPDATE SET workspace = excluded.workspace, labels = excluded.labels,
				relay = excluded.relay, applied_hash = excluded.applied_hash, last_result = excluded.last_result,
				last_error = excluded.last_error, last_seen = excluded.last_seen, result_hash = excluded.result_hash,
				result_output = excluded.result_output, result_at = excluded.result_at`,
			a.ID, a.Workspace, string(lj), a.Relay, a.AppliedHash, a.LastResult, a.LastError, seen, db.clock(),
			a.ResultHash, a.ResultOutput, resAt); err != nil {
			return err
		}
		var err error
		out, err = scanAgent(q.queryRow(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = $1", a.ID))
		return err
	})
	if err != nil {
		return Agent{}, fmt.Errorf("put agent %q: %w", a.ID, err)
	}
	return out, nil
}

// GetAgent returns one agent.
func (db *DB) GetAgent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	err := db.tx(ctx, false, func(q querier) error {
		var err error
		a, err = scanAgent(q.queryRow(ctx, "SELECT "+agentColumns+" FROM agents WHERE id = $1", id))
		return err
	})
	if isNoRows(err) {
		return Agent{}, fmt.Errorf("agent %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Agent{}, fmt.Errorf("get agent %q: %w", id, err)
	}
	return a, nil
}

// ListAgents returns the agents of a workspace by ID.
func (db *DB) ListAgents(ctx context.Context, ws string) ([]Agent, error) {
	out, err := db.queryAgents(ctx, "WHERE workspace = $1 ORDER BY id", ws)
	if err != nil {
		return nil, fmt.Errorf("list agents of workspace %q: %w", ws, err)
	}
	return out, nil
}

// ListAgentsAfter returns at most n agents of a workspace whose id sorts
// after after (from the first when empty), by ID: one page of a listing.
func (db *DB) ListAgentsAfter(ctx context.Context, ws, after string, n int) ([]Agent, error) {
	out, err := db.queryAgents(ctx, "WHERE workspace = $1 AND id > $2 ORDER BY id LIMIT $3", ws, after, n)
	if err != nil {
		return nil, fmt.Errorf("list agents of workspace %q after %q: %w", ws, after, err)
	}
	return out, nil
}

// queryAgents reads whole agent rows; where is the query after FROM agents.
func (db *DB) queryAgents(ctx context.Context, where string, args ...any) ([]Agent, error) {
	var out []Agent
	err := db.tx(ctx, false, func(q querier) error {
		out = out[:0]
		rs, err := q.query(ctx, "SELECT "+agentColumns+" FROM agents "+where, args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			a, err := scanAgent(rs)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return rs.Err()
	})
	return out, err
}

// DeleteAgent deletes an agent; a missing one is ErrNotFound.
func (db *DB) DeleteAgent(ctx context.Context, id string) error {
	err := db.tx(ctx, true, func(q querier) error {
		n, err := q.exec(ctx, "DELETE FROM agents WHERE id = $1", id)
		if err == nil && n == 0 {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete agent %q: %w", id, err)
	}
	return nil
}

// AppendAudit records an event. An empty ID gets a fresh one (a UUID, as
// PostgreSQL requires) and a zero CreatedAt gets the store clock; Detail
// must be a JSON object or empty.
func (db *DB) AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error) {
	if e.ID == "" {
		e.ID = db.newID()
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = db.clock()
	}
	e.CreatedAt = e.CreatedAt.UTC().Truncate(time.Microsecond)
	if len(e.Detail) == 0 {
		e.Detail = []byte("{}")
	}
	if !json.Valid(e.Detail) {
		return AuditEvent{}, fmt.Errorf("append audit event %q: %w: detail is not JSON", e.Action, ErrInvalid)
	}
	err := db.tx(ctx, true, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO audit_events (id, workspace, actor, action, target, detail, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, e.ID, e.Workspace, e.Actor, e.Action, e.Target, string(e.Detail), e.CreatedAt)
		return err
	})
	if err != nil {
		return AuditEvent{}, fmt.Errorf("append audit event %q: %w", e.Action, err)
	}
	return e, nil
}

// ListAudit returns up to limit events of a workspace ("" for
// installation-wide ones) created before the given time (zero: from the
// newest), newest first. limit <= 0 means 100.
func (db *DB) ListAudit(ctx context.Context, ws string, before time.Time, limit int) ([]AuditEvent, error) {
	if before.IsZero() {
		before = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if limit <= 0 {
		limit = 100
	}
	var out []AuditEvent
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		rs, err := q.query(ctx, `SELECT id, workspace, actor, action, target, detail, created_at FROM audit_events
			WHERE workspace = $1 AND created_at < $2 ORDER BY created_at DESC, id DESC LIMIT $3`,
			ws, before.UTC(), limit)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var e AuditEvent
			if err := rs.Scan(&e.ID, &e.Workspace, &e.Actor, &e.Action, &e.Target, &e.Detail, &e.CreatedAt); err != nil {
				return err
			}
			e.CreatedAt = e.CreatedAt.UTC()
			out = append(out, e)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list audit events of workspace %q: %w", ws, err)
	}
	return out, nil
}

// ListAgentStates returns the agents of a workspace by ID with what
// convergence needs: ID, Workspace, Labels, Relay, AppliedHash and the last
// result's fields, without ResultAt, LastSeen and CreatedAt. Parsing those
// timestamps was a quarter of the cost of ListAgents, which a convergence
// answer paid for every agent of the workspace; labels shared by many
// agents are parsed once.
func (db *DB) ListAgentStates(ctx context.Context, ws string) ([]Agent, error) {
	var out []Agent
	err := db.tx(ctx, false, func(q querier) error {
		out = out[:0]
		rs, err := q.query(ctx, `SELECT id, labels, relay, applied_hash, last_result, last_error, result_hash, result_output
			FROM agents WHERE workspace = $1 ORDER BY id`, ws)
		if err != nil {
			return err
		}
		defer rs.Close()
		parsed := map[string]map[string]string{}
		for rs.Next() {
			a := Agent{Workspace: ws}
			var labels string
			if err := rs.Scan(&a.ID, &labels, &a.Relay, &a.AppliedHash, &a.LastResult, &a.LastError, &a.ResultHash, &a.ResultOutput); err != nil {
				return err
			}
			l, ok := parsed[labels]
			if !ok {
				if err := json.Unmarshal([]byte(labels), &l); err != nil {
					return fmt.Errorf("agent %q labels: %w", a.ID, err)
				}
				if len(l) == 0 {
					l = nil
				}
				parsed[labels] = l
			}
			// Agents with equal labels share one map; callers only read it.
			a.Labels = l
			out = append(out, a)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list agent states of workspace %q: %w", ws, err)
	}
	return out, nil
}
