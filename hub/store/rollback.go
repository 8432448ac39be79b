package store

import (
	"context"
	"errors"
	"fmt"
)

// rollbackAttempts bounds how often Rollback starts over because the
// workspace changed between reading it and writing.
const rollbackAttempts = 5

// errWorkspaceMoved aborts a rollback's commit when the workspace is no
// longer at the revision its mutations were computed from.
var errWorkspaceMoved = errors.New("workspace changed during rollback")

// Rollback makes the resources of a workspace equal to those of an earlier
// revision, as one new revision: resources changed since are put back,
// resources deleted since are recreated, and resources created since are
// deleted. When the workspace already equals that revision nothing is
// written and Changed is false. Resources lists the outcome for each
// resource of the target revision, sorted by kind and name; deletions
// show only in the diff between the new revision and the one before.
//
// The mutations are computed from a snapshot at revision N and committed in
// one transaction that first checks, inside that transaction, that the
// workspace is still at N: version checks alone would miss a resource
// created in between, which would survive the rollback. When the check
// fails, Rollback starts over from a new snapshot.
func (db *DB) Rollback(ctx context.Context, ws string, number int64, c Change) (ApplyResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := db.rollbackOnce(ctx, ws, number, c)
		if errors.Is(err, errWorkspaceMoved) && attempt < rollbackAttempts {
			if err := backoff(ctx, attempt); err != nil {
				return ApplyResult{}, err
			}
			continue
		}
		if errors.Is(err, errWorkspaceMoved) {
			err = fmt.Errorf("%w: the workspace kept changing during %d attempts; try again", ErrConflict, attempt)
		}
		if err != nil {
			return ApplyResult{}, fmt.Errorf("roll workspace %q back to revision %d: %w", ws, number, err)
		}
		return res, nil
	}
}

func (db *DB) rollbackOnce(ctx context.Context, ws string, number int64, c Change) (ApplyResult, error) {
	var (
		base int64
		muts []mutation
	)
	err := db.tx(ctx, false, func(q querier) error {
		muts = nil
		var err error
		if base, err = workspaceRevision(ctx, q, ws); err != nil {
			return err
		}
		if number < 1 || number > base {
			return fmt.Errorf("revision %d (current is %d): %w", number, base, ErrNotFound)
		}
		target, err := db.resourcesAt(ctx, q, ws, number)
		if err != nil {
			return err
		}
		rs, err := q.query(ctx, "SELECT "+resourceColumns+" FROM resources WHERE workspace = $1", ws)
		if err != nil {
			return err
		}
		now, err := db.scanResources(rs, ws)
		if err != nil {
			return err
		}
		keep := make(map[key]bool, len(target))
		for i := range target {
			keep[keyOf(&target[i])] = true
			muts = append(muts, mutation{key: keyOf(&target[i]), doc: &target[i], expected: anyVersion})
		}
		for _, r := range now {
			if k := keyOf(&r.Doc); !keep[k] {
				muts = append(muts, mutation{key: k, expected: r.Version})
			}
		}
		return nil
	})
	if err != nil {
		return ApplyResult{}, err
	}
	if len(muts) == 0 {
		return ApplyResult{Revision: base}, nil
	}
	guarded := db.guarded(func(ctx context.Context, q querier) error {
		rev, err := workspaceRevision(ctx, q, ws)
		if err == nil && rev != base {
			err = errWorkspaceMoved
		}
		return err
	})
	res, err := guarded.commit(ctx, ws, muts, c)
	db.retries.Add(guarded.retries.Load())
	db.writes.Add(guarded.writes.Load())
	if err != nil {
		return ApplyResult{}, err
	}
	var applied []Applied
	for i, m := range muts {
		if m.doc != nil {
			applied = append(applied, res.applied[i])
		}
	}
	return ApplyResult{Revision: res.rev.Number, Changed: res.changed, Resources: applied}, nil
}

// guarded returns a DB that shares db's backend, clock and hooks and runs
// check first in each of its transactions. TestGuardedKeepsEveryField
// fails when DB gains a field this copy leaves out.
func (db *DB) guarded(check func(ctx context.Context, q querier) error) *DB {
	return &DB{
		b:          guardedBackend{backend: db.b, check: check},
		now:        db.now,
		newID:      db.newID,
		log:        db.log,
		onRevision: db.onRevision,
		secrets:    db.secrets,
	}
}

// guardedBackend runs check first in every transaction of the backend it
// wraps, inside that transaction, so that a commit made through it writes
// only while check holds.
type guardedBackend struct {
	backend
	check func(ctx context.Context, q querier) error
}

func (g guardedBackend) tx(ctx context.Context, write bool, fn func(q querier) error) error {
	return g.backend.tx(ctx, write, func(q querier) error {
		if err := g.check(ctx, q); err != nil {
			return err
		}
		return fn(q)
	})
}
