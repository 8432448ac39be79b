package store

import (
	"context"
	"fmt"
)

// CreateOrganization creates an organization; an existing name is
// ErrConflict.
func (db *DB) CreateOrganization(ctx context.Context, name string) (Organization, error) {
	if name == "" {
		return Organization{}, fmt.Errorf("create organization: %w: empty name", ErrInvalid)
	}
	o := Organization{Name: name, CreatedAt: db.clock()}
	err := db.tx(ctx, true, func(q querier) error {
		n, err := q.exec(ctx, "INSERT INTO organizations (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, o.CreatedAt)
		if err == nil && n == 0 {
			err = ErrConflict
		}
		return err
	})
	if err != nil {
		return Organization{}, fmt.Errorf("create organization %q: %w", name, err)
	}
	return o, nil
}

// GetOrganization returns one organization.
func (db *DB) GetOrganization(ctx context.Context, name string) (Organization, error) {
	var o Organization
	err := db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, "SELECT name, created_at FROM organizations WHERE name = $1", name).Scan(&o.Name, &o.CreatedAt)
	})
	if isNoRows(err) {
		return Organization{}, fmt.Errorf("organization %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Organization{}, fmt.Errorf("get organization %q: %w", name, err)
	}
	o.CreatedAt = o.CreatedAt.UTC()
	return o, nil
}

// ListOrganizations returns all organizations by name.
func (db *DB) ListOrganizations(ctx context.Context) ([]Organization, error) {
	var out []Organization
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		rs, err := q.query(ctx, "SELECT name, created_at FROM organizations ORDER BY name")
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var o Organization
			if err := rs.Scan(&o.Name, &o.CreatedAt); err != nil {
				return err
			}
			o.CreatedAt = o.CreatedAt.UTC()
			out = append(out, o)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list organizations: %w", err)
	}
	return out, nil
}

// CreateWorkspace creates a workspace in an existing organization; an
// existing workspace name (in any organization) is ErrConflict.
func (db *DB) CreateWorkspace(ctx context.Context, org, name string) (Workspace, error) {
	if name == "" {
		return Workspace{}, fmt.Errorf("create workspace: %w: empty name", ErrInvalid)
	}
	w := Workspace{Name: name, Organization: org, CreatedAt: db.clock()}
	err := db.tx(ctx, true, func(q querier) error {
		var x string
		err := q.queryRow(ctx, "SELECT name FROM organizations WHERE name = $1", org).Scan(&x)
		if isNoRows(err) {
			return fmt.Errorf("organization %q: %w", org, ErrNotFound)
		}
		if err != nil {
			return err
		}
		n, err := q.exec(ctx, "INSERT INTO workspaces (name, org, revision, created_at) VALUES ($1, $2, 0, $3) ON CONFLICT (name) DO NOTHING",
			name, org, w.CreatedAt)
		if err == nil && n == 0 {
			err = ErrConflict
		}
		return err
	})
	if err != nil {
		return Workspace{}, fmt.Errorf("create workspace %q: %w", name, err)
	}
	return w, nil
}

const workspaceColumns = "name, org, revision, created_at"

func scanWorkspace(r row) (Workspace, error) {
	var w Workspace
	err := r.Scan(&w.Name, &w.Organization, &w.Revision, &w.CreatedAt)
	w.CreatedAt = w.CreatedAt.UTC()
	return w, err
}

// GetWorkspace returns one workspace with its current revision. Hubs poll
// it to notice each other's changes.
func (db *DB) GetWorkspace(ctx context.Context, name string) (Workspace, error) {
	var w Workspace
	err := db.tx(ctx, false, func(q querier) error {
		var err error
		w, err = scanWorkspace(q.queryRow(ctx, "SELECT "+workspaceColumns+" FROM workspaces WHERE name = $1", name))
		return err
	})
	if isNoRows(err) {
		return Workspace{}, fmt.Errorf("workspace %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("get workspace %q: %w", name, err)
	}
	return w, nil
}

// ListWorkspaces returns the workspaces of an organization (all when org
// is empty) by name.
func (db *DB) ListWorkspaces(ctx context.Context, org string) ([]Workspace, error) {
	var out []Workspace
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		var (
			rs  rows
			err error
		)
		if org == "" {
			rs, err = q.query(ctx, "SELECT "+workspaceColumns+" FROM workspaces ORDER BY name")
		} else {
			rs, err = q.query(ctx, "SELECT "+workspaceColumns+" FROM workspaces WHERE org = $1 ORDER BY name", org)
		}
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			w, err := scanWorkspace(rs)
			if err != nil {
				return err
			}
			out = append(out, w)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	return out, nil
}

// EnsureDefault creates the organization and workspace named "default" if
// they are missing and returns the workspace.
func (db *DB) EnsureDefault(ctx context.Context) (Workspace, error) {
	var w Workspace
	now := db.clock()
	err := db.tx(ctx, true, func(q querier) error {
		if _, err := q.exec(ctx, "INSERT INTO organizations (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
			DefaultName, now); err != nil {
			return err
		}
		if _, err := q.exec(ctx, "INSERT INTO workspaces (name, org, revision, created_at) VALUES ($1, $1, 0, $2) ON CONFLICT (name) DO NOTHING",
			DefaultName, now); err != nil {
			return err
		}
		var err error
		w, err = scanWorkspace(q.queryRow(ctx, "SELECT "+workspaceColumns+" FROM workspaces WHERE name = $1", DefaultName))
		return err
	})
	if err != nil {
		return Workspace{}, fmt.Errorf("ensure default workspace: %w", err)
	}
	return w, nil
}
