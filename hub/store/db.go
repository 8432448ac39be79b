package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Config says which database to open and what the store may take from its
// environment.
type Config struct {
	// URL is a postgres://, postgresql:// or cockroach:// URL, or else a
	// SQLite file path, optionally prefixed with "sqlite:".
	URL string
	// Now is the clock for timestamps and lease expiry; time.Now if nil.
	Now func() time.Time
	// NewID returns a fresh unique ID (audit events); uuid.NewString if nil.
	NewID func() string
	// Logger receives migration progress; slog.Default() if nil.
	Logger *slog.Logger
	// MaxConns bounds the PostgreSQL pool; 0 means pgx's default or the
	// URL's pool_max_conns.
	MaxConns int32
	// SecretKey is the installation's 32-byte secret key, which every hub
	// is given. The secret fields of resources (a Certificate's private
	// key) are stored sealed under keys derived from it. Required.
	SecretKey []byte
	// OnRevision, when set, is called after every committed change to a
	// workspace with its new revision (the hub pushes it to agents). It
	// must not block.
	OnRevision func(ws string, rev int64)
}

// DB is a Store on one of the supported databases.
type DB struct {
	b     backend
	now   func() time.Time
	newID func() string
	log   *slog.Logger

	onRevision func(ws string, rev int64)
	secrets    *secrets

	retries atomic.Int64 // transaction attempts after the first
	writes  atomic.Int64 // write transactions committed
}

// Stats are counters about a DB's work.
type Stats struct {
	// Retries counts transactions rerun after a retryable error
	// (SQLSTATE 40001 serialization failure or 40P01 deadlock).
	Retries int64
	// Writes counts write transactions committed (a batch of many rows
	// is one).
	Writes int64
}

// Open connects to the database named by cfg.URL and migrates it to this
// binary's schema.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	sec, err := newSecrets(cfg.SecretKey)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db := &DB{now: cfg.Now, newID: cfg.NewID, log: cfg.Logger, onRevision: cfg.OnRevision, secrets: sec}
	if db.now == nil {
		db.now = time.Now
	}
	if db.newID == nil {
		db.newID = uuid.NewString
	}
	if db.log == nil {
		db.log = slog.Default()
	}
	switch u := cfg.URL; {
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
		db.b, err = openPostgres(ctx, u, cfg.MaxConns)
	case strings.HasPrefix(u, "cockroach://"):
		db.b, err = openPostgres(ctx, "postgres://"+strings.TrimPrefix(u, "cockroach://"), cfg.MaxConns)
	case u == "":
		return nil, errors.New("open store: no database URL or file")
	default:
		db.b, err = openSQLite(strings.TrimPrefix(u, "sqlite:"))
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := db.migrate(ctx); err != nil {
		db.b.close()
		return nil, err
	}
	return db, nil
}

// Close releases the database connections.
func (db *DB) Close() error { return db.b.close() }

// Dialect reports the SQL dialect in use: schema.DialectSQLite or
// schema.DialectPostgres.
func (db *DB) Dialect() string { return db.b.dialect() }

// Stats returns the DB's counters.
func (db *DB) Stats() Stats { return Stats{Retries: db.retries.Load(), Writes: db.writes.Load()} }

// clock returns the store time: UTC, at the microsecond precision that
// both PostgreSQL and SQLite keep, so values read back compare equal.
func (db *DB) clock() time.Time { return db.now().UTC().Truncate(time.Microsecond) }

// querier is what transaction code sees; both backends implement it with
// the same SQL ($n placeholders).
type querier interface {
	exec(ctx context.Context, q string, args ...any) (int64, error)
	query(ctx context.Context, q string, args ...any) (rows, error)
	queryRow(ctx context.Context, q string, args ...any) row
	// execMany runs one statement once per argument list, pipelined where
	// the driver can.
	execMany(ctx context.Context, q string, argLists [][]any) error
}

type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

type row interface {
	Scan(dest ...any) error
}

// backend runs transactions on one kind of database.
type backend interface {
	dialect() string
	// tx runs fn in one transaction; fn may run again (from the start)
	// when the backend retries. write=false promises fn only reads.
	tx(ctx context.Context, write bool, fn func(q querier) error) error
	close() error
}

// tx runs fn in a transaction and counts the reruns.
func (db *DB) tx(ctx context.Context, write bool, fn func(q querier) error) error {
	attempts := 0
	err := db.b.tx(ctx, write, func(q querier) error {
		attempts++
		if attempts > 1 {
			db.retries.Add(1)
		}
		return fn(q)
	})
	if write && err == nil {
		db.writes.Add(1)
	}
	return err
}

// isNoRows reports whether a row scan found nothing, on either driver.
func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// backoff sleeps a random time that grows with the attempt, so that
// contending transactions do not restart in lockstep.
func backoff(ctx context.Context, attempt int) error {
	limit := time.Millisecond << min(attempt, 6) // up to 64 ms
	t := time.NewTimer(rand.N(limit))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
