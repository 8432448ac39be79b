package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/nxmesh/nxmesh/schema"
)

// key identifies a resource within a workspace.
type key struct {
	kind schema.Kind
	name string
}

func keyOf(doc *schema.Resource) key { return key{doc.Kind, doc.Metadata.Name} }

func sortKeys(ks []key) {
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].kind != ks[j].kind {
			return ks[i].kind < ks[j].kind
		}
		return ks[i].name < ks[j].name
	})
}

// encoded is a document in its canonical stored form: Go's JSON encoding
// of the labels and the typed spec, secrets sealed (secrets.go), which is
// what "unchanged" compares.
type encoded struct {
	labels string
	spec   string
}

func (db *DB) encode(doc *schema.Resource) (encoded, error) {
	if doc.Spec == nil {
		return encoded{}, fmt.Errorf("%s %q: %w: spec is missing", doc.Kind, doc.Metadata.Name, ErrInvalid)
	}
	if doc.Spec.Kind() != doc.Kind {
		return encoded{}, fmt.Errorf("%s %q: %w: spec is of kind %s", doc.Kind, doc.Metadata.Name, ErrInvalid, doc.Spec.Kind())
	}
	labels := doc.Metadata.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	l, err := json.Marshal(labels)
	if err != nil {
		return encoded{}, err
	}
	s, err := json.Marshal(db.secrets.sealSpec(doc.Spec))
	if err != nil {
		return encoded{}, fmt.Errorf("%s %q: encode spec: %w", doc.Kind, doc.Metadata.Name, err)
	}
	return encoded{labels: string(l), spec: string(s)}, nil
}

// decode rebuilds a document from its stored columns.
func (db *DB) decode(kind, name string, labels, spec []byte) (schema.Resource, error) {
	doc := schema.Resource{APIVersion: schema.APIVersion, Kind: schema.Kind(kind), Metadata: schema.Metadata{Name: name}}
	if err := json.Unmarshal(labels, &doc.Metadata.Labels); err != nil {
		return doc, fmt.Errorf("stored %s %q: labels: %w", kind, name, err)
	}
	if len(doc.Metadata.Labels) == 0 {
		doc.Metadata.Labels = nil
	}
	s, err := schema.DecodeSpec(doc.Kind, spec)
	if err == nil {
		err = db.secrets.openSpec(s)
	}
	if err != nil {
		return doc, fmt.Errorf("stored %s %q: spec: %w", kind, name, err)
	}
	doc.Spec = s
	return doc, nil
}

const resourceColumns = "kind, name, labels, spec, version, created_at, updated_at"

func (db *DB) scanResources(rs rows, ws string) ([]Resource, error) {
	defer rs.Close()
	var out []Resource
	for rs.Next() {
		var (
			kind, name   string
			labels, spec []byte
			r            = Resource{Workspace: ws}
		)
		if err := rs.Scan(&kind, &name, &labels, &spec, &r.Version, &r.CreatedAt, &r.UpdatedAt); err != nil {
			return nil, err
		}
		doc, err := db.decode(kind, name, labels, spec)
		if err != nil {
			return nil, err
		}
		r.Doc = doc
		r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, err
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

// workspaceRevision returns the workspace's current revision or ErrNotFound.
func workspaceRevision(ctx context.Context, q querier, ws string) (int64, error) {
	var rev int64
	err := q.queryRow(ctx, "SELECT revision FROM workspaces WHERE name = $1", ws).Scan(&rev)
	if isNoRows(err) {
		return 0, fmt.Errorf("workspace %q: %w", ws, ErrNotFound)
	}
	return rev, err
}

// GetResource returns one resource of a workspace.
func (db *DB) GetResource(ctx context.Context, ws string, kind schema.Kind, name string) (Resource, error) {
	var out []Resource
	err := db.tx(ctx, false, func(q querier) error {
		rs, err := q.query(ctx, "SELECT "+resourceColumns+" FROM resources WHERE workspace = $1 AND kind = $2 AND name = $3",
			ws, string(kind), name)
		if err != nil {
			return err
		}
		out, err = db.scanResources(rs, ws)
		return err
	})
	if err != nil {
		return Resource{}, fmt.Errorf("get %s %q in workspace %q: %w", kind, name, ws, err)
	}
	if len(out) == 0 {
		return Resource{}, fmt.Errorf("%s %q in workspace %q: %w", kind, name, ws, ErrNotFound)
	}
	return out[0], nil
}

// ListResources returns the resources of a workspace sorted by kind and
// name, only those of one kind unless kind is empty.
func (db *DB) ListResources(ctx context.Context, ws string, kind schema.Kind) ([]Resource, error) {
	var out []Resource
	err := db.tx(ctx, false, func(q querier) error {
		if _, err := workspaceRevision(ctx, q, ws); err != nil {
			return err
		}
		var (
			rs  rows
			err error
		)
		if kind == "" {
			rs, err = q.query(ctx, "SELECT "+resourceColumns+" FROM resources WHERE workspace = $1", ws)
		} else {
			rs, err = q.query(ctx, "SELECT "+resourceColumns+" FROM resources WHERE workspace = $1 AND kind = $2", ws, string(kind))
		}
		if err != nil {
			return err
		}
		out, err = db.scanResources(rs, ws)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list resources of workspace %q: %w", ws, err)
	}
	return out, nil
}

// PutResource creates or replaces one resource. expected is the version
// the caller read: 0 means the resource must not exist yet; any other
// mismatch is a *ConflictError. A change creates a revision; writing the
// same content again creates none and returns the current revision number.
func (db *DB) PutResource(ctx context.Context, ws string, doc schema.Resource, expected int64, c Change) (Resource, Revision, error) {
	if expected < 0 {
		return Resource{}, Revision{}, fmt.Errorf("put %s %q: %w: negative expected version", doc.Kind, doc.Metadata.Name, ErrInvalid)
	}
	res, err := db.commit(ctx, ws, []mutation{{key: keyOf(&doc), doc: &doc, expected: expected}}, c)
	if err != nil {
		return Resource{}, Revision{}, fmt.Errorf("put %s %q in workspace %q: %w", doc.Kind, doc.Metadata.Name, ws, err)
	}
	return res.resources[0], res.rev, nil
}

// DeleteResource deletes one resource at the expected version (0: any
// version) as a new revision.
func (db *DB) DeleteResource(ctx context.Context, ws string, kind schema.Kind, name string, expected int64, c Change) (Revision, error) {
	if expected == 0 {
		expected = anyVersion
	}
	res, err := db.commit(ctx, ws, []mutation{{key: key{kind, name}, expected: expected}}, c)
	if err != nil {
		return Revision{}, fmt.Errorf("delete %s %q in workspace %q: %w", kind, name, ws, err)
	}
	return res.rev, nil
}

// Apply creates or updates a batch of documents as one revision, all or
// nothing. Resources not in the batch stay as they are; the resulting set
// is validated as a whole with schema.ValidateSet. Documents identical to
// the stored ones keep their version, and a batch that changes nothing
// creates no revision.
func (db *DB) Apply(ctx context.Context, ws string, docs []schema.Resource, c Change) (ApplyResult, error) {
	muts := make([]mutation, len(docs))
	for i := range docs {
		muts[i] = mutation{key: keyOf(&docs[i]), doc: &docs[i], expected: anyVersion}
	}
	res, err := db.commit(ctx, ws, muts, c)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("apply %d documents to workspace %q: %w", len(docs), ws, err)
	}
	return ApplyResult{Revision: res.rev.Number, Changed: res.changed, Resources: res.applied}, nil
}

// anyVersion in a mutation skips the version check.
const anyVersion = -1

// mutation is one resource write of a commit.
type mutation struct {
	key
	doc      *schema.Resource // nil deletes
	expected int64            // anyVersion, 0 (must not exist) or a version
}

type commitResult struct {
	rev       Revision // the new revision, or only the current number if !changed
	changed   bool
	applied   []Applied  // per mutation
	resources []Resource // per mutation: the state after the write (zero for deletes)
}

// current is a stored resource as commit sees it.
type current struct {
	Resource
	enc   encoded
	input *schema.Resource // the document as written, with its Source, for error messages
}

// commit is the one write path for resources: it checks versions,
// validates the resulting set, and writes changes as one new revision.
func (db *DB) commit(ctx context.Context, ws string, muts []mutation, c Change) (commitResult, error) {
	// Checks that need no database run once, outside the retried part.
	encs := make([]encoded, len(muts))
	seen := make(map[key]bool, len(muts))
	var invalid []error
	for i, m := range muts {
		if seen[m.key] {
			return commitResult{}, fmt.Errorf("%w: %s %q appears twice", ErrInvalid, m.kind, m.name)
		}
		seen[m.key] = true
		if m.doc == nil {
			continue
		}
		if err := m.doc.Validate(); err != nil {
			invalid = append(invalid, err)
			continue
		}
		enc, err := db.encode(m.doc)
		if err != nil {
			return commitResult{}, err
		}
		encs[i] = enc
	}
	if len(invalid) > 0 {
		return commitResult{}, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(invalid...))
	}

	var res commitResult
	err := db.tx(ctx, true, func(q querier) error {
		res = commitResult{applied: make([]Applied, len(muts)), resources: make([]Resource, len(muts))}
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
		set := make(map[key]*current, len(list))
		for _, r := range list {
			enc, err := db.encode(&r.Doc)
			if err != nil {
				return err
			}
			set[keyOf(&r.Doc)] = &current{Resource: r, enc: enc}
		}

		now := db.clock()
		newRev := rev + 1
		var upserts, history [][]any
		var deletes []key
		for i, m := range muts {
			cur := set[m.key]
			var actual int64
			if cur != nil {
				actual = cur.Version
			}
			if m.expected != anyVersion && m.expected != actual {
				return &ConflictError{Kind: m.kind, Name: m.name, Expected: m.expected, Actual: actual}
			}
			if m.doc == nil {
				if cur == nil {
					return fmt.Errorf("%s %q: %w", m.kind, m.name, ErrNotFound)
				}
				delete(set, m.key)
				deletes = append(deletes, m.key)
				history = append(history, []any{ws, string(m.kind), m.name, newRev, actual + 1, nil, nil})
				continue
			}
			enc := encs[i]
			if cur != nil && cur.enc == enc {
				res.applied[i] = Applied{Kind: m.kind, Name: m.name, Op: Unchanged, Version: actual}
				res.resources[i] = cur.Resource
				continue
			}
			next := Resource{Workspace: ws, Doc: *m.doc, Version: actual + 1, CreatedAt: now, UpdatedAt: now}
			next.Doc.APIVersion = schema.APIVersion
			next.Doc.Source = schema.Source{}
			op := Created
			if cur != nil {
				op = Updated
				next.CreatedAt = cur.CreatedAt
			}
			set[m.key] = &current{Resource: next, enc: enc, input: m.doc}
			res.applied[i] = Applied{Kind: m.kind, Name: m.name, Op: op, Version: next.Version}
			res.resources[i] = next
			upserts = append(upserts, []any{ws, string(m.kind), m.name, enc.labels, enc.spec, next.Version, now})
			history = append(history, []any{ws, string(m.kind), m.name, newRev, next.Version, enc.labels, enc.spec})
		}

		keys := make([]key, 0, len(set))
		for k := range set {
			keys = append(keys, k)
		}
		sortKeys(keys)
		docs := make([]schema.Resource, len(keys))
		for i, k := range keys {
			docs[i] = set[k].Doc
			if in := set[k].input; in != nil {
				docs[i] = *in
			}
		}
		if err := schema.ValidateSet(c.Source, docs); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}

		if len(history) == 0 {
			res.rev = Revision{Workspace: ws, Number: rev}
			return nil
		}
		var got int64
		if err := q.queryRow(ctx, "UPDATE workspaces SET revision = revision + 1 WHERE name = $1 RETURNING revision", ws).Scan(&got); err != nil {
			return err
		}
		if got != newRev {
			return fmt.Errorf("workspace %q revision moved from %d to %d inside a transaction", ws, rev, got)
		}
		res.rev = Revision{Workspace: ws, Number: newRev, Author: c.Author, Message: c.Message, CreatedAt: now}
		res.changed = true
		if _, err := q.exec(ctx, "INSERT INTO revisions (workspace, number, author, message, created_at) VALUES ($1, $2, $3, $4, $5)",
			ws, newRev, c.Author, c.Message, now); err != nil {
			return err
		}
		err = q.execMany(ctx, `INSERT INTO resources (workspace, kind, name, labels, spec, version, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			ON CONFLICT (workspace, kind, name) DO UPDATE SET
				labels = excluded.labels, spec = excluded.spec, version = excluded.version, updated_at = excluded.updated_at`, upserts)
		if err != nil {
			return err
		}
		for _, k := range deletes {
			if _, err := q.exec(ctx, "DELETE FROM resources WHERE workspace = $1 AND kind = $2 AND name = $3", ws, string(k.kind), k.name); err != nil {
				return err
			}
		}
		return q.execMany(ctx, `INSERT INTO resource_history (workspace, kind, name, revision, version, labels, spec)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, history)
	})
	if err == nil && res.changed && db.onRevision != nil {
		db.onRevision(ws, res.rev.Number)
	}
	return res, err
}

const revisionColumns = "workspace, number, author, message, created_at"

func scanRevision(r row) (Revision, error) {
	var rev Revision
	err := r.Scan(&rev.Workspace, &rev.Number, &rev.Author, &rev.Message, &rev.CreatedAt)
	rev.CreatedAt = rev.CreatedAt.UTC()
	return rev, err
}

// GetRevision returns one revision of a workspace.
func (db *DB) GetRevision(ctx context.Context, ws string, number int64) (Revision, error) {
	var rev Revision
	err := db.tx(ctx, false, func(q querier) error {
		var err error
		rev, err = scanRevision(q.queryRow(ctx, "SELECT "+revisionColumns+" FROM revisions WHERE workspace = $1 AND number = $2", ws, number))
		return err
	})
	if isNoRows(err) {
		return Revision{}, fmt.Errorf("revision %d of workspace %q: %w", number, ws, ErrNotFound)
	}
	if err != nil {
		return Revision{}, fmt.Errorf("get revision %d of workspace %q: %w", number, ws, err)
	}
	return rev, nil
}

// ListRevisions returns up to limit revisions numbered below before (0:
// from the newest), newest first. limit <= 0 means 100.
func (db *DB) ListRevisions(ctx context.Context, ws string, before int64, limit int) ([]Revision, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	if limit <= 0 {
		limit = 100
	}
	var out []Revision
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		if _, err := workspaceRevision(ctx, q, ws); err != nil {
			return err
		}
		rs, err := q.query(ctx, "SELECT "+revisionColumns+` FROM revisions
			WHERE workspace = $1 AND number < $2 ORDER BY number DESC LIMIT $3`, ws, before, limit)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			rev, err := scanRevision(rs)
			if err != nil {
				return err
			}
			out = append(out, rev)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list revisions of workspace %q: %w", ws, err)
	}
	return out, nil
}

// ResourcesAt rebuilds the resource set of a workspace as it was at a
// revision, sorted by kind and name. Revision 0 is the empty set.
func (db *DB) ResourcesAt(ctx context.Context, ws string, revision int64) ([]schema.Resource, error) {
	var out []schema.Resource
	err := db.tx(ctx, false, func(q querier) error {
		var err error
		out, err = db.resourcesAt(ctx, q, ws, revision)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("resources of workspace %q at revision %d: %w", ws, revision, err)
	}
	return out, nil
}

func (db *DB) resourcesAt(ctx context.Context, q querier, ws string, revision int64) ([]schema.Resource, error) {
	cur, err := workspaceRevision(ctx, q, ws)
	if err != nil {
		return nil, err
	}
	if revision < 0 || revision > cur {
		return nil, fmt.Errorf("revision %d (current is %d): %w", revision, cur, ErrNotFound)
	}
	rs, err := q.query(ctx, `SELECT h.kind, h.name, h.labels, h.spec FROM resource_history h
		WHERE h.workspace = $1 AND h.spec IS NOT NULL AND h.revision = (
			SELECT MAX(h2.revision) FROM resource_history h2
			WHERE h2.workspace = h.workspace AND h2.kind = h.kind AND h2.name = h.name AND h2.revision <= $2)`,
		ws, revision)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []schema.Resource
	for rs.Next() {
		var kind, name string
		var labels, spec []byte
		if err := rs.Scan(&kind, &name, &labels, &spec); err != nil {
			return nil, err
		}
		doc, err := db.decode(kind, name, labels, spec)
		if err != nil {
			return nil, err
		}
		out = append(out, doc)
	}
	if err := rs.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Metadata.Name < out[j].Metadata.Name
	})
	return out, nil
}

// Diff compares the resource sets of two revisions of a workspace, sorted
// by kind and name.
func (db *DB) Diff(ctx context.Context, ws string, from, to int64) ([]DiffEntry, error) {
	var a, b []schema.Resource
	err := db.tx(ctx, false, func(q querier) error {
		var err error
		if a, err = db.resourcesAt(ctx, q, ws, from); err != nil {
			return err
		}
		b, err = db.resourcesAt(ctx, q, ws, to)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("diff workspace %q revisions %d..%d: %w", ws, from, to, err)
	}
	old := make(map[key]*schema.Resource, len(a))
	for i := range a {
		old[keyOf(&a[i])] = &a[i]
	}
	var out []DiffEntry
	for i := range b {
		n := &b[i]
		k := keyOf(n)
		o, ok := old[k]
		delete(old, k)
		if !ok {
			out = append(out, DiffEntry{Kind: k.kind, Name: k.name, Op: Added, New: n})
			continue
		}
		eo, err1 := db.encode(o)
		en, err2 := db.encode(n)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		if eo != en {
			out = append(out, DiffEntry{Kind: k.kind, Name: k.name, Op: Changed, Old: o, New: n})
		}
	}
	for k, o := range old {
		out = append(out, DiffEntry{Kind: k.kind, Name: k.name, Op: Removed, Old: o})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}
