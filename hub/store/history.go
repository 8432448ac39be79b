package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
)

// RevisionResources returns the resources of a workspace as they were at a
// revision, sorted by kind and name, each with the version it had then and
// the times of the revisions that created it and last changed it: for the
// current revision, exactly what ListResources returns. Revision 0 is the
// empty set.
func (db *DB) RevisionResources(ctx context.Context, ws string, revision int64) ([]Resource, error) {
	var out []Resource
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		cur, err := workspaceRevision(ctx, q, ws)
		if err != nil {
			return err
		}
		if revision < 0 || revision > cur {
			return fmt.Errorf("revision %d (current is %d): %w", revision, cur, ErrNotFound)
		}
		// h is the newest history row of each resource at the revision; c
		// is the row that created the resource as it then existed: the
		// newest version 1 at or before h (a deleted and recreated
		// resource starts again at version 1).
		rs, err := q.query(ctx, `SELECT h.kind, h.name, h.labels, h.spec, h.version, rc.created_at, ru.created_at
			FROM resource_history h
			JOIN revisions ru ON ru.workspace = h.workspace AND ru.number = h.revision
			LEFT JOIN resource_history c ON c.workspace = h.workspace AND c.kind = h.kind AND c.name = h.name
				AND c.revision = (SELECT MAX(c2.revision) FROM resource_history c2
					WHERE c2.workspace = h.workspace AND c2.kind = h.kind AND c2.name = h.name
						AND c2.version = 1 AND c2.revision <= h.revision)
			LEFT JOIN revisions rc ON rc.workspace = c.workspace AND rc.number = c.revision
			WHERE h.workspace = $1 AND h.spec IS NOT NULL AND h.revision = (
				SELECT MAX(h2.revision) FROM resource_history h2
				WHERE h2.workspace = h.workspace AND h2.kind = h.kind AND h2.name = h.name AND h2.revision <= $2)`,
			ws, revision)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var (
				kind, name   string
				labels, spec []byte
				created      sql.NullTime
				r            = Resource{Workspace: ws}
			)
			if err := rs.Scan(&kind, &name, &labels, &spec, &r.Version, &created, &r.UpdatedAt); err != nil {
				return err
			}
			if r.Doc, err = db.decode(kind, name, labels, spec); err != nil {
				return err
			}
			// Only a pruned history lacks the creating row.
			if created.Valid {
				r.CreatedAt = created.Time.UTC()
			}
			r.UpdatedAt = r.UpdatedAt.UTC()
			out = append(out, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("resources of workspace %q at revision %d: %w", ws, revision, err)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Doc, out[j].Doc
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		return a.Metadata.Name < b.Metadata.Name
	})
	return out, nil
}
