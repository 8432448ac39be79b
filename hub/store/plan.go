package store

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/nxmesh/nxmesh/schema"
)

// PlanApply computes what Apply would do with docs, and the diff between
// the workspace now and after it, without writing anything: it runs in a
// read-only transaction, so a dry run cannot change the workspace even by
// mistake. The result's Revision is the number Apply would create, or the
// current one when nothing would change. Errors are those Apply would
// return: ErrInvalid for a bad document or a resulting set that does not
// validate, ErrNotFound for a missing workspace.
func (db *DB) PlanApply(ctx context.Context, ws string, docs []schema.Resource, c Change) (ApplyResult, []DiffEntry, error) {
	encs := make([]encoded, len(docs))
	seen := make(map[key]bool, len(docs))
	var invalid []error
	for i := range docs {
		k := keyOf(&docs[i])
		if seen[k] {
			return ApplyResult{}, nil, fmt.Errorf("plan apply to workspace %q: %w: %s %q appears twice", ws, ErrInvalid, k.kind, k.name)
		}
		seen[k] = true
		if err := docs[i].Validate(); err != nil {
			invalid = append(invalid, err)
			continue
		}
		enc, err := db.encode(&docs[i])
		if err != nil {
			return ApplyResult{}, nil, err
		}
		encs[i] = enc
	}
	if len(invalid) > 0 {
		return ApplyResult{}, nil, fmt.Errorf("plan apply to workspace %q: %w: %w", ws, ErrInvalid, errors.Join(invalid...))
	}

	var (
		res  ApplyResult
		diff []DiffEntry
	)
	err := db.tx(ctx, false, func(q querier) error {
		res, diff = ApplyResult{Resources: make([]Applied, len(docs))}, nil
		rev, err := workspaceRevision(ctx, q, ws)
		if err != nil {
			return err
		}
		rs, err := q.query(ctx, "SELECT "+resourceColumns+" FROM resources WHERE workspace = $1", ws)
		if err != nil {
			return err
		}
		list, err := db.scanResources(rs, ws)
		if err != nil {
			return err
		}
		// after is the set as Apply would leave it, with the documents as
		// given (for their Source in error messages).
		after := make(map[key]schema.Resource, len(list)+len(docs))
		cur := make(map[key]*Resource, len(list))
		for i := range list {
			k := keyOf(&list[i].Doc)
			cur[k], after[k] = &list[i], list[i].Doc
		}
		for i := range docs {
			k := keyOf(&docs[i])
			after[k] = docs[i]
			// The new document as the store would read it back, so that a
			// dry run's diff equals the one of the real apply.
			stored, err := db.decode(string(k.kind), k.name, []byte(encs[i].labels), []byte(encs[i].spec))
			if err != nil {
				return err
			}
			old := cur[k]
			if old == nil {
				res.Resources[i] = Applied{Kind: k.kind, Name: k.name, Op: Created, Version: 1}
				diff = append(diff, DiffEntry{Kind: k.kind, Name: k.name, Op: Added, New: &stored})
				continue
			}
			oldEnc, err := db.encode(&old.Doc)
			if err != nil {
				return err
			}
			if oldEnc == encs[i] {
				res.Resources[i] = Applied{Kind: k.kind, Name: k.name, Op: Unchanged, Version: old.Version}
				continue
			}
			res.Resources[i] = Applied{Kind: k.kind, Name: k.name, Op: Updated, Version: old.Version + 1}
			diff = append(diff, DiffEntry{Kind: k.kind, Name: k.name, Op: Changed, Old: &old.Doc, New: &stored})
		}
		keys := make([]key, 0, len(after))
		for k := range after {
			keys = append(keys, k)
		}
		sortKeys(keys)
		set := make([]schema.Resource, len(keys))
		for i, k := range keys {
			set[i] = after[k]
		}
		if err := schema.ValidateSet(c.Source, set); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		res.Revision, res.Changed = rev, len(diff) > 0
		if res.Changed {
			res.Revision = rev + 1
		}
		return nil
	})
	if err != nil {
		return ApplyResult{}, nil, fmt.Errorf("plan apply of %d documents to workspace %q: %w", len(docs), ws, err)
	}
	sort.Slice(diff, func(i, j int) bool {
		if diff[i].Kind != diff[j].Kind {
			return diff[i].Kind < diff[j].Kind
		}
		return diff[i].Name < diff[j].Name
	})
	return res, diff, nil
}
