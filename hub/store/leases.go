package store

import (
	"context"
	"fmt"
	"time"
)

// AcquireLease takes the named lease for holder until now+ttl (store
// clock). It succeeds if the lease is free, expired, or already held by
// holder (which renews it); otherwise the error matches ErrLeaseHeld.
func (db *DB) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	return db.lease(ctx, name, holder, ttl, false)
}

// RenewLease extends a lease that holder holds. It fails with ErrLeaseHeld
// when another holder has taken it and ErrNotFound when it was released;
// the caller has then lost the lease and must stop the guarded work.
func (db *DB) RenewLease(ctx context.Context, name, holder string, ttl time.Duration) (Lease, error) {
	return db.lease(ctx, name, holder, ttl, true)
}

func (db *DB) lease(ctx context.Context, name, holder string, ttl time.Duration, renew bool) (Lease, error) {
	if name == "" || holder == "" || ttl <= 0 {
		return Lease{}, fmt.Errorf("lease %q: %w: need a name, a holder and a positive ttl", name, ErrInvalid)
	}
	var l Lease
	err := db.tx(ctx, true, func(q querier) error {
		now := db.clock()
		var cur Lease
		err := q.queryRow(ctx, "SELECT holder, expires_at FROM leases WHERE name = $1", name).Scan(&cur.Holder, &cur.ExpiresAt)
		switch {
		case isNoRows(err):
			if renew {
				return ErrNotFound
			}
		case err != nil:
			return err
		case cur.Holder != holder && (renew || now.Before(cur.ExpiresAt)):
			return &leaseHeldError{holder: cur.Holder, expires: cur.ExpiresAt.UTC()}
		}
		l = Lease{Name: name, Holder: holder, ExpiresAt: now.Add(ttl)}
		_, err = q.exec(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at`,
			name, holder, l.ExpiresAt)
		return err
	})
	if err != nil {
		return Lease{}, fmt.Errorf("lease %q for %q: %w", name, holder, err)
	}
	return l, nil
}

type leaseHeldError struct {
	holder  string
	expires time.Time
}

func (e *leaseHeldError) Error() string {
	return fmt.Sprintf("held by %q until %s", e.holder, e.expires.Format(time.RFC3339Nano))
}

func (e *leaseHeldError) Is(target error) bool { return target == ErrLeaseHeld }

// ReleaseLease gives up a lease if holder holds it; releasing a lease one
// does not hold is not an error.
func (db *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	err := db.tx(ctx, true, func(q querier) error {
		_, err := q.exec(ctx, "DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)
		return err
	})
	if err != nil {
		return fmt.Errorf("release lease %q for %q: %w", name, holder, err)
	}
	return nil
}

// GetLease returns the current record of a lease, which may have expired.
func (db *DB) GetLease(ctx context.Context, name string) (Lease, error) {
	l := Lease{Name: name}
	err := db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, "SELECT holder, expires_at FROM leases WHERE name = $1", name).Scan(&l.Holder, &l.ExpiresAt)
	})
	if isNoRows(err) {
		err = ErrNotFound
	}
	if err != nil {
		return Lease{}, fmt.Errorf("lease %q: %w", name, err)
	}
	l.ExpiresAt = l.ExpiresAt.UTC()
	return l, nil
}
