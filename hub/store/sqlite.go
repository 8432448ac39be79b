package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"modernc.org/sqlite" // registers driver "sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/nxmesh/nxmesh/schema"
)

// sqliteBusyTimeout matches _busy_timeout in sqliteParams.
const sqliteBusyTimeout = 10 * time.Second

// sqliteBackend keeps two pools on one WAL file: a single writer
// connection, so that writers queue in Go instead of spinning on
// SQLITE_BUSY (BEGIN IMMEDIATE and busy_timeout still cover other
// processes on the same file), and a few readers that see snapshots.
type sqliteBackend struct {
	w, r   *sql.DB
	ws, rs *stmtCache // prepared statements of w and r
}

// stmtCache keeps prepared statements, which database/sql reuses on every
// connection they were prepared on: parsing SQL is a third of the cost of
// a small write otherwise. A statement first seen inside a transaction is
// prepared after it, because the writer's only connection is busy until
// then.
type stmtCache struct {
	db *sql.DB
	mu sync.Mutex // guards m
	m  map[string]*sql.Stmt
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, m: make(map[string]*sql.Stmt)}
}

func (c *stmtCache) get(q string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[q]
}

// prepare adds statements to the cache; one that fails to prepare is left
// out and will simply run unprepared.
func (c *stmtCache) prepare(ctx context.Context, qs []string) {
	for _, q := range qs {
		if c.get(q) != nil {
			continue
		}
		st, err := c.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		if c.m[q] == nil {
			c.m[q], st = st, nil
		}
		c.mu.Unlock()
		if st != nil {
			st.Close()
		}
	}
}

func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.m {
		st.Close()
	}
	c.m = nil
}

var _ backend = (*sqliteBackend)(nil)

// sqliteParams are the DSN parameters modernc.org/sqlite applies to every
// connection. synchronous=NORMAL in WAL mode keeps the file consistent
// after any crash; a power loss can drop the last commits.
const sqliteParams = "_busy_timeout=10000&_foreign_keys=1&_journal_mode=WAL&_synchronous=NORMAL&_time_format=sqlite"

func openSQLite(path string) (*sqliteBackend, error) {
	if path == "" || path == ":memory:" {
		return nil, errors.New("sqlite: a file path is required")
	}
	w, err := sql.Open("sqlite", path+"?"+sqliteParams+"&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := pingSQLite(w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", path+"?"+sqliteParams+"&_query_only=1")
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	return &sqliteBackend{w: w, r: r, ws: newStmtCache(w), rs: newStmtCache(r)}, nil
}

// pingSQLite opens db's first connection, which applies the DSN's pragmas.
// Switching a new file to WAL takes an exclusive lock, and SQLite answers
// SQLITE_BUSY at once, without its busy handler, when another connection
// is switching it at the same moment (hubs or tests opening one new file
// together). SQLite's advice for that case is to try again: this does,
// for as long as the busy timeout.
func pingSQLite(db *sql.DB) error {
	deadline := time.Now().Add(sqliteBusyTimeout)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := db.Ping()
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		time.Sleep(wait)
	}
}

func (b *sqliteBackend) dialect() string { return schema.DialectSQLite }

func (b *sqliteBackend) close() error {
	b.ws.close()
	b.rs.close()
	return errors.Join(b.r.Close(), b.w.Close())
}

func (b *sqliteBackend) tx(ctx context.Context, write bool, fn func(querier) error) error {
	pool, cache := b.r, b.rs
	if write {
		pool, cache = b.w, b.ws
	}
	tx, err := pool.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	t := &sqliteTx{tx: tx, cache: cache}
	if err := fn(t); err != nil {
		tx.Rollback()
		return err
	}
	err = tx.Commit()
	if len(t.missed) > 0 {
		cache.prepare(ctx, t.missed)
	}
	return err
}

type sqliteTx struct {
	tx     *sql.Tx
	cache  *stmtCache
	missed []string // statements to prepare after the transaction
}

// stmt returns the cached statement for q bound to the transaction, or nil.
// Statements without arguments (migration scripts) are not cached.
func (t *sqliteTx) stmt(ctx context.Context, q string, nargs int) *sql.Stmt {
	if nargs == 0 {
		return nil
	}
	if st := t.cache.get(q); st != nil {
		return t.tx.StmtContext(ctx, st)
	}
	t.missed = append(t.missed, q)
	return nil
}

func (t *sqliteTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	var (
		res sql.Result
		err error
	)
	if st := t.stmt(ctx, q, len(args)); st != nil {
		res, err = st.ExecContext(ctx, args...)
	} else {
		res, err = t.tx.ExecContext(ctx, q, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *sqliteTx) query(ctx context.Context, q string, args ...any) (rows, error) {
	var (
		rs  *sql.Rows
		err error
	)
	if st := t.stmt(ctx, q, len(args)); st != nil {
		rs, err = st.QueryContext(ctx, args...)
	} else {
		rs, err = t.tx.QueryContext(ctx, q, args...)
	}
	if err != nil {
		return nil, err
	}
	return sqliteRows{rs}, nil
}

func (t *sqliteTx) queryRow(ctx context.Context, q string, args ...any) row {
	if st := t.stmt(ctx, q, len(args)); st != nil {
		return st.QueryRowContext(ctx, args...)
	}
	return t.tx.QueryRowContext(ctx, q, args...)
}

func (t *sqliteTx) execMany(ctx context.Context, q string, argLists [][]any) error {
	if len(argLists) == 0 {
		return nil
	}
	st := t.stmt(ctx, q, 1)
	if st == nil {
		var err error
		if st, err = t.tx.PrepareContext(ctx, q); err != nil {
			return err
		}
		defer st.Close()
	}
	for _, args := range argLists {
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

type sqliteRows struct{ *sql.Rows }

func (r sqliteRows) Close() { r.Rows.Close() }
