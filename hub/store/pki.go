package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// The certificate authority's state: the sealed CA, enrollment tokens,
// issued certificates and revocations. The types are the store's own (the
// store imports nothing of pki/ca); package hub adapts them to ca.Storage.

// TokenRecord is an enrollment token as stored: its jti and what it grants,
// never the token itself.
type TokenRecord struct {
	JTI       string
	Workspace string // "" for relays
	Role      string
	Labels    map[string]string
	Remaining int // uses left
	ExpiresAt time.Time
	CreatedAt time.Time
}

// TokenUse is the outcome of ConsumeToken.
type TokenUse int

// Outcomes of ConsumeToken.
const (
	TokenConsumed TokenUse = iota + 1 // one use taken
	TokenUsedUp                       // known jti, no use left
	TokenUnknown                      // jti never recorded
)

// CertRecord is one issued certificate.
type CertRecord struct {
	Serial    string // decimal
	Identity  string // SPIFFE URI; "" when the certificate had none
	NotBefore time.Time
	NotAfter  time.Time
}

// Revocation is one revoked serial.
type Revocation struct {
	Serial    string // decimal
	Reason    string
	RevokedAt time.Time
}

// caStateID is the key of the single ca_state row.
const caStateID = "ca"

func ts(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// GetCA returns the sealed CA material, or ErrNotFound before the first hub
// created it.
func (db *DB) GetCA(ctx context.Context) ([]byte, error) {
	var sealed []byte
	err := db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, "SELECT sealed FROM ca_state WHERE id = $1", caStateID).Scan(&sealed)
	})
	if isNoRows(err) {
		return nil, fmt.Errorf("certificate authority: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read certificate authority: %w", err)
	}
	return sealed, nil
}

// CreateCA stores the sealed CA material unless a CA exists already, in
// which case it returns an error matching ErrConflict and changes nothing.
// Two hubs starting on an empty database race here; exactly one wins.
func (db *DB) CreateCA(ctx context.Context, sealed []byte) error {
	if len(sealed) == 0 {
		return fmt.Errorf("create certificate authority: %w: empty material", ErrInvalid)
	}
	err := db.tx(ctx, true, func(q querier) error {
		n, err := q.exec(ctx, `INSERT INTO ca_state (id, sealed, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO NOTHING`, caStateID, sealed, db.clock())
		if err == nil && n == 0 {
			err = ErrConflict
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create certificate authority: %w", err)
	}
	return nil
}

// CreateToken records a new enrollment token.
func (db *DB) CreateToken(ctx context.Context, t TokenRecord) error {
	if t.JTI == "" || t.Remaining <= 0 {
		return fmt.Errorf("create enrollment token: %w: need a jti and at least one use", ErrInvalid)
	}
	labels := t.Labels
	if labels == nil {
		labels = map[string]string{}
	}
	lj, err := json.Marshal(labels)
	if err != nil {
		return err
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = db.clock()
	}
	err = db.tx(ctx, true, func(q querier) error {
		n, err := q.exec(ctx, `INSERT INTO enrollment_tokens (jti, workspace, role, labels, remaining, expires_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (jti) DO NOTHING`,
			t.JTI, t.Workspace, t.Role, string(lj), t.Remaining, ts(t.ExpiresAt), ts(t.CreatedAt))
		if err == nil && n == 0 {
			err = ErrConflict
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("create enrollment token %s: %w", t.JTI, err)
	}
	return nil
}

// GetToken returns an enrollment token's record.
func (db *DB) GetToken(ctx context.Context, jti string) (TokenRecord, error) {
	t := TokenRecord{JTI: jti}
	var labels []byte
	err := db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, `SELECT workspace, role, labels, remaining, expires_at, created_at
			FROM enrollment_tokens WHERE jti = $1`, jti).Scan(&t.Workspace, &t.Role, &labels, &t.Remaining, &t.ExpiresAt, &t.CreatedAt)
	})
	if isNoRows(err) {
		return TokenRecord{}, fmt.Errorf("enrollment token %s: %w", jti, ErrNotFound)
	}
	if err != nil {
		return TokenRecord{}, fmt.Errorf("read enrollment token %s: %w", jti, err)
	}
	if err := json.Unmarshal(labels, &t.Labels); err != nil {
		return TokenRecord{}, fmt.Errorf("enrollment token %s labels: %w", jti, err)
	}
	if len(t.Labels) == 0 {
		t.Labels = nil
	}
	t.ExpiresAt, t.CreatedAt = t.ExpiresAt.UTC(), t.CreatedAt.UTC()
	return t, nil
}

// ConsumeToken atomically takes one use of the token with this jti. The
// decision is the row count of one conditional UPDATE, so however many
// hubs redeem the same token at once, no more succeed than it has uses:
// concurrent updates of the row serialize in the database (on PostgreSQL at
// SERIALIZABLE the losers fail with 40001, rerun, and then see remaining =
// 0). Only when nothing was updated does a second statement tell a used-up
// token from an unknown one.
func (db *DB) ConsumeToken(ctx context.Context, jti string) (TokenUse, error) {
	var use TokenUse
	err := db.tx(ctx, true, func(q querier) error {
		n, err := q.exec(ctx, "UPDATE enrollment_tokens SET remaining = remaining - 1 WHERE jti = $1 AND remaining > 0", jti)
		if err != nil {
			return err
		}
		if n == 1 {
			use = TokenConsumed
			return nil
		}
		var exists int
		err = q.queryRow(ctx, "SELECT 1 FROM enrollment_tokens WHERE jti = $1", jti).Scan(&exists)
		switch {
		case isNoRows(err):
			use = TokenUnknown
			return nil
		case err != nil:
			return err
		}
		use = TokenUsedUp
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("consume enrollment token %s: %w", jti, err)
	}
	return use, nil
}

// RecordCertificate records an issued certificate; recording the same
// serial twice keeps the first record.
func (db *DB) RecordCertificate(ctx context.Context, c CertRecord) error {
	if c.Serial == "" {
		return fmt.Errorf("record certificate: %w: empty serial", ErrInvalid)
	}
	err := db.tx(ctx, true, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO certificates (serial, identity, not_before, not_after) VALUES ($1, $2, $3, $4)
			ON CONFLICT (serial) DO NOTHING`, c.Serial, c.Identity, ts(c.NotBefore), ts(c.NotAfter))
		return err
	})
	if err != nil {
		return fmt.Errorf("record certificate %s: %w", c.Serial, err)
	}
	return nil
}

// ListCertificates returns the certificates recorded for an identity, by
// serial.
func (db *DB) ListCertificates(ctx context.Context, identity string) ([]CertRecord, error) {
	var out []CertRecord
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		rs, err := q.query(ctx, `SELECT serial, identity, not_before, not_after FROM certificates
			WHERE identity = $1 ORDER BY serial`, identity)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var c CertRecord
			if err := rs.Scan(&c.Serial, &c.Identity, &c.NotBefore, &c.NotAfter); err != nil {
				return err
			}
			c.NotBefore, c.NotAfter = c.NotBefore.UTC(), c.NotAfter.UTC()
			out = append(out, c)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list certificates of %s: %w", identity, err)
	}
	return out, nil
}

// Revoke marks a serial revoked. Revoking twice keeps the first record and
// is not an error.
func (db *DB) Revoke(ctx context.Context, r Revocation) error {
	if r.Serial == "" {
		return fmt.Errorf("revoke: %w: empty serial", ErrInvalid)
	}
	if r.RevokedAt.IsZero() {
		r.RevokedAt = db.clock()
	}
	err := db.tx(ctx, true, func(q querier) error {
		_, err := q.exec(ctx, `INSERT INTO revocations (serial, reason, revoked_at) VALUES ($1, $2, $3)
			ON CONFLICT (serial) DO NOTHING`, r.Serial, r.Reason, ts(r.RevokedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke certificate %s: %w", r.Serial, err)
	}
	return nil
}

// RevokeIdentity revokes every serial recorded for identity (a SPIFFE URI)
// in one transaction and returns how many were newly revoked.
func (db *DB) RevokeIdentity(ctx context.Context, identity, reason string, at time.Time) (int, error) {
	if identity == "" {
		return 0, fmt.Errorf("revoke identity: %w: empty identity", ErrInvalid)
	}
	if at.IsZero() {
		at = db.clock()
	}
	var n int64
	err := db.tx(ctx, true, func(q querier) error {
		var err error
		n, err = q.exec(ctx, `INSERT INTO revocations (serial, reason, revoked_at)
			SELECT serial, $2, $3 FROM certificates WHERE identity = $1
			ON CONFLICT (serial) DO NOTHING`, identity, reason, ts(at))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("revoke certificates of %s: %w", identity, err)
	}
	return int(n), nil
}

// IsRevoked reports whether a serial was revoked.
func (db *DB) IsRevoked(ctx context.Context, serial string) (bool, error) {
	var found bool
	err := db.tx(ctx, false, func(q querier) error {
		var one int
		err := q.queryRow(ctx, "SELECT 1 FROM revocations WHERE serial = $1", serial).Scan(&one)
		if isNoRows(err) {
			found = false
			return nil
		}
		found = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("check revocation of %s: %w", serial, err)
	}
	return found, nil
}
