package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nxmesh/nxmesh/schema"
)

// migration is one embedded NNNN_name.sql file.
type migration struct {
	version int64
	name    string
	sql     string
}

// loadMigrations reads the dialect's migrations in version order.
func loadMigrations(dialect string) ([]migration, error) {
	fsys, err := schema.Migrations(dialect)
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, n := range names {
		num, _, ok := strings.Cut(n, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s/%s: name is not NNNN_name.sql", dialect, n)
		}
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: n, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := range ms {
		if ms[i].version != int64(i+1) {
			return nil, fmt.Errorf("migration %s/%s: expected version %d", dialect, ms[i].name, i+1)
		}
	}
	return ms, nil
}

// schemaMigrationsDDL creates the table that records applied migrations.
var schemaMigrationsDDL = map[string]string{
	schema.DialectSQLite: `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL)`,
	schema.DialectPostgres: `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)`,
}

// migrate brings the database to the newest migration this binary has.
//
// Hubs may start at the same moment. Each migration runs in its own
// transaction that first inserts its schema_migrations row with ON
// CONFLICT DO NOTHING: that row is the lock. A hub that finds the row
// (after waiting for the other hub's commit, and possibly a serialization
// retry) skips the migration. No advisory locks, so this works on
// CockroachDB too.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations(db.b.dialect())
	if err != nil {
		return err
	}
	latest := int64(len(ms))
	// Two hubs racing on CREATE TABLE IF NOT EXISTS can collide in the
	// PostgreSQL catalog (unique violation on pg_type); the loser retries
	// and then finds the table.
	for attempt := 1; ; attempt++ {
		err := db.tx(ctx, true, func(q querier) error {
			_, err := q.exec(ctx, schemaMigrationsDDL[db.b.dialect()])
			return err
		})
		if err == nil {
			break
		}
		if !catalogRace(err) || attempt == 10 {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
	}
	var current int64
	err = db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&current)
	})
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if current > latest {
		return &SchemaTooNewError{Database: current, Binary: latest}
	}
	for _, m := range ms[current:] {
		applied := false
		err := db.tx(ctx, true, func(q querier) error {
			applied = false
			n, err := q.exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)
				ON CONFLICT (version) DO NOTHING`, m.version, db.clock())
			if err != nil || n == 0 {
				return err
			}
			if _, err := q.exec(ctx, m.sql); err != nil {
				return err
			}
			applied = true
			return nil
		})
		if err != nil {
			return fmt.Errorf("migration %s/%s: %w", db.b.dialect(), m.name, err)
		}
		if applied {
			db.log.Info("applied migration", "dialect", db.b.dialect(), "migration", m.name)
		}
	}
	return nil
}

// catalogRace reports a PostgreSQL error from concurrent DDL on the same
// name: unique_violation (in pg_type), duplicate_table or duplicate_object.
func catalogRace(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "42P07" || pgErr.Code == "42710")
}
