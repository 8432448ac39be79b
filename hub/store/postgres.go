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
// transaction is SERIALIZABLE and runs through crdbpgxv5.ExecuteTx.
//
// ExecuteTx retries inside the transaction by rolling back to a savepoint.
// That is how CockroachDB wants it, but PostgreSQL keeps the transaction's
// snapshot across ROLLBACK TO SAVEPOINT, so there a retry sees the same
// stale data and fails again. On PostgreSQL we therefore allow ExecuteTx a
// single inner retry and rerun the whole transaction, with backoff, when it
// gives up on a retryable error.
type pgBackend struct {
	pool         *pgxpool.Pool
	cockroach    bool
	innerRetries int
}

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
	b := &pgBackend{pool: pool, cockroach: strings.Contains(version, "CockroachDB"), innerRetries: 1}
	if b.cockroach {
		b.innerRetries = 50
	}
	return b, nil
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
	ictx := crdb.WithMaxRetries(ctx, b.innerRetries)
	for attempt := 1; ; attempt++ {
		err := crdbpgx.ExecuteTx(ictx, b.pool, opts, func(tx pgx.Tx) error {
			return fn(pgTx{tx})
		})
		if err == nil || !retryable(err) || attempt == maxTxAttempts {
			return err
		}
		if err := backoff(ctx, attempt); err != nil {
			return err
		}
	}
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
