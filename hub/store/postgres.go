package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	crdbpgx "github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nxmesh/nxmesh/schema"
)

// pgBackend runs on PostgreSQL and CockroachDB through a pgx pool. Every
// transaction is SERIALIZABLE, and tx reruns a whole transaction, with
// backoff, when it fails with a retryable error (attempt says how one
// runs on each database).
type pgBackend struct {
	pool      *pgxpool.Pool
	cockroach bool
}

// cockroachInnerRetries is how often cockroach-go's ExecuteTx may restart
// a transaction in place on CockroachDB before tx reruns it whole.
const cockroachInnerRetries = 50

var _ backend = (*pgBackend)(nil)

// maxTxAttempts bounds whole-transaction reruns on PostgreSQL.
const maxTxAttempts = 100

func openPostgres(ctx context.Context, url string, maxConns int32) (*pgBackend, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var version string
	if err := pool.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	return &pgBackend{pool: pool, cockroach: strings.Contains(version, "CockroachDB")}, nil
}

func (b *pgBackend) dialect() string { return schema.DialectPostgres }

func (b *pgBackend) close() error { b.pool.Close(); return nil }

// retryable reports whether a whole transaction should be rerun.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "40001" || pgErr.Code == "40P01"
	}
	return false
}

func (b *pgBackend) tx(ctx context.Context, write bool, fn func(querier) error) error {
	opts := pgx.TxOptions{IsoLevel: pgx.Serializable}
	if !write {
		opts.AccessMode = pgx.ReadOnly
	}
	for attempt := 1; ; attempt++ {
		err := b.attempt(ctx, opts, fn)
		if err == nil || !retryable(err) || attempt == maxTxAttempts {
			return err
		}
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
	}
}

// attempt runs fn in one transaction and commits it.
//
// On CockroachDB, cockroach-go's ExecuteTx runs it with the savepoint
// protocol: RELEASE SAVEPOINT commits, and a retryable error there restarts
// fn in place. On PostgreSQL, RELEASE commits nothing. The COMMIT that
// follows is where serializable isolation may still fail the transaction
// (SQLSTATE 40001, read/write dependencies among transactions), and
// ExecuteTx ignores COMMIT's error, so a transaction PostgreSQL rolled back
// looked committed: concurrent writers lost updates. There attempt begins,
// runs fn and commits itself, and returns COMMIT's error for tx to retry.
func (b *pgBackend) attempt(ctx context.Context, opts pgx.TxOptions, fn func(querier) error) error {
	if b.cockroach {
		return crdbpgx.ExecuteTx(crdb.WithMaxRetries(ctx, cockroachInnerRetries), b.pool, opts, func(tx pgx.Tx) error {
			return fn(pgTx{tx})
		})
	}
	tx, err := b.pool.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) // after Commit, a no-op
	if err := fn(pgTx{tx}); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

type pgTx struct{ tx pgx.Tx }

func (t pgTx) exec(ctx context.Context, q string, args ...any) (int64, error) {
	tag, err := t.tx.Exec(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (t pgTx) query(ctx context.Context, q string, args ...any) (rows, error) {
	rs, err := t.tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	return rs, nil
}

func (t pgTx) queryRow(ctx context.Context, q string, args ...any) row {
	return t.tx.QueryRow(ctx, q, args...)
}

func (t pgTx) execMany(ctx context.Context, q string, argLists [][]any) error {
	if len(argLists) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, args := range argLists {
		batch.Queue(q, args...)
	}
	return t.tx.SendBatch(ctx, batch).Close()
}
