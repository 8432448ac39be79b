// Package store owns the hub's SQL state: organizations, workspaces,
// versioned resources and their revision history, agents, leases and the
// audit log. One set of queries runs on SQLite (one hub) and on PostgreSQL
// or CockroachDB (many hubs); every transaction goes through a retry helper.
// Only the hub imports it; nothing else touches SQL.
package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nxmesh/nxmesh/schema"
)

// Errors callers branch on; test with errors.Is.
var (
	// ErrNotFound: the organization, workspace, resource, revision, agent or
	// lease does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a write named a version that is not the current one, or
	// created something that already exists. See ConflictError.
	ErrConflict = errors.New("conflict")
	// ErrInvalid wraps schema validation errors (schema.FieldError,
	// schema.Errors), which errors.As still finds.
	ErrInvalid = errors.New("invalid")
	// ErrLeaseHeld: another holder has an unexpired lease.
	ErrLeaseHeld = errors.New("lease held by another holder")
	// ErrSchemaTooNew: the database was migrated by a newer binary. See
	// SchemaTooNewError.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
)

// ConflictError is an optimistic concurrency failure on one resource. It
// matches ErrConflict.
type ConflictError struct {
	Kind     schema.Kind
	Name     string
	Expected int64 // version the caller based its write on; 0 = must not exist
	Actual   int64 // current version; 0 = does not exist
}

func (e *ConflictError) Error() string {
	switch {
	case e.Expected == 0:
		return fmt.Sprintf("%s %q already exists (version %d)", e.Kind, e.Name, e.Actual)
	case e.Actual == 0:
		return fmt.Sprintf("%s %q: expected version %d, but it does not exist", e.Kind, e.Name, e.Expected)
	}
	return fmt.Sprintf("%s %q: expected version %d, but the current version is %d", e.Kind, e.Name, e.Expected, e.Actual)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// SchemaTooNewError refuses a database migrated past what this binary
// knows. It matches ErrSchemaTooNew.
type SchemaTooNewError struct {
	Database int64 // newest migration applied to the database
	Binary   int64 // newest migration this binary has
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("database schema version %d is newer than this binary's %d: upgrade the nxmesh binary", e.Database, e.Binary)
}

// Is makes errors.Is(err, ErrSchemaTooNew) true.
func (e *SchemaTooNewError) Is(target error) bool { return target == ErrSchemaTooNew }

// DefaultName is the name of the organization and workspace EnsureDefault
// creates.
const DefaultName = "default"

// Organization owns workspaces.
type Organization struct {
	Name      string
	CreatedAt time.Time
}

// Workspace holds resources and agents. Workspace names are unique across
// organizations (they appear in agent identities). Revision is the newest
// revision number, 0 before the first change.
type Workspace struct {
	Name         string
	Organization string
	Revision     int64
	CreatedAt    time.Time
}

// Resource is a stored document with its concurrency version (1 on
// creation, +1 on every change).
type Resource struct {
	Workspace string
	Doc       schema.Resource
	Version   int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Change describes who makes a write and why; it becomes the revision row.
type Change struct {
	Author  string
	Message string
	// Source names where documents came from (a file name) for validation
	// errors; optional.
	Source string
}

// Revision is an immutable record of one change to a workspace.
type Revision struct {
	Workspace string
	Number    int64
	Author    string
	Message   string
	CreatedAt time.Time
}

// ApplyOp says what Apply did to one document.
type ApplyOp string

// Apply outcomes.
const (
	Created   ApplyOp = "created"
	Updated   ApplyOp = "updated"
	Unchanged ApplyOp = "unchanged"
)

// Applied is the outcome for one document of a write.
type Applied struct {
	Kind    schema.Kind
	Name    string
	Op      ApplyOp
	Version int64 // version after the write
}

// ApplyResult is the outcome of Apply. When nothing changed, no revision
// is created: Changed is false and Revision is the workspace's current one.
type ApplyResult struct {
	Revision  int64
	Changed   bool
	Resources []Applied // in the order of the documents
}

// DiffOp says how a resource differs between two revisions.
type DiffOp string

// Diff outcomes.
const (
	Added   DiffOp = "added"
	Changed DiffOp = "changed"
	Removed DiffOp = "removed"
)

// DiffEntry is one resource that differs between two revisions. Old is nil
// when added, New is nil when removed.
type DiffEntry struct {
	Kind schema.Kind
	Name string
	Op   DiffOp
	Old  *schema.Resource
	New  *schema.Resource
}

// Lease is a named lock with an expiry, used to elect the hub that runs a
// singleton job.
type Lease struct {
	Name      string
	Holder    string
	ExpiresAt time.Time
}

// Agent is an enrolled nginx sidecar and what it last reported.
type Agent struct {
	ID          string
	Workspace   string
	Labels      map[string]string
	Relay       string // relay the agent is connected through; "" if none
	AppliedHash string // bundle hash the agent reports as applied
	// LastResult is the state of the agent's last apply result (wire's
	// "applied", "rejected", "rolled_back", "failed"), "" before the first.
	LastResult string
	// LastError is that result's one-line reason, "" when applied.
	LastError string
	// ResultHash is the bundle the last result is about.
	ResultHash string
	// ResultOutput is nginx's output for the last result, if any.
	ResultOutput string
	// ResultAt is when the hub learned of the last result.
	ResultAt  time.Time
	LastSeen  time.Time // zero if never seen
	CreatedAt time.Time
}

// AuditEvent is one entry of the audit log. Detail is a JSON object.
type AuditEvent struct {
	ID        string // set by AppendAudit when empty
	Workspace string // "" for installation-wide events
	Actor     string
	Action    string
	Target    string
	Detail    []byte
	CreatedAt time.Time // set by AppendAudit when zero
}

// Store is the hub's persistent state. *DB implements it on SQLite,
// PostgreSQL and CockroachDB.
type Store interface {
	CreateOrganization(ctx context.Context, name string) (Organization, error)
	GetOrganization(ctx context.Context, name string) (Organization, error)
	ListOrganizations(ctx context.Context) ([]Organization, error)
	CreateWorkspace(ctx context.Context, org, name string) (Workspace, error)
	GetWorkspace(ctx context.Context, name string) (Workspace, error)
	ListWorkspaces(ctx context.Context, org string) ([]Workspace, error)
	EnsureDefault(ctx context.Context) (Workspace, error)

	GetResource(ctx context.Context, ws string, kind schema.Kind, name string) (Resource, error)
	ListResources(ctx context.Context, ws string, kind schema.Kind) ([]Resource, error)
	PutResource(ctx context.Context, ws string, doc schema.Resource, expected int64, c Change) (Resource, Revision, error)
	DeleteResource(ctx context.Context, ws string, kind schema.Kind, name string, expected int64, c Change) (Revision, error)
	Apply(ctx context.Context, ws string, docs []schema.Resource, c Change) (ApplyResult, error)

	GetRevision(ctx context.Context, ws string, number int64) (Revision, error)
	ListRevisions(ctx context.Context, ws string, before int64, limit int) ([]Revision, error)
	ResourcesAt(ctx context.Context, ws string, revision int64) ([]schema.Resource, error)
	Diff(ctx context.Context, ws string, from, to int64) ([]DiffEntry, error)

	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error)
	RenewLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error)
	ReleaseLease(ctx context.Context, name, holder string) error
	GetLease(ctx context.Context, name string) (Lease, error)

	PutAgent(ctx context.Context, a Agent) (Agent, error)
	GetAgent(ctx context.Context, id string) (Agent, error)
	ListAgents(ctx context.Context, ws string) ([]Agent, error)
	DeleteAgent(ctx context.Context, id string) error

	AppendAudit(ctx context.Context, e AuditEvent) (AuditEvent, error)
	ListAudit(ctx context.Context, ws string, before time.Time, limit int) ([]AuditEvent, error)

	Close() error
}

var _ Store = (*DB)(nil)
