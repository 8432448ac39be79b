package store

import (
	"context"
	"database/sql"
	"fmt"
)

// ListAPITokens returns the tokens of one kind (TokenKindAPI or
// TokenKindSession) that a user holds, expired ones included, oldest first.
func (db *DB) ListAPITokens(ctx context.Context, user, kind string) ([]APIToken, error) {
	var out []APIToken
	err := db.tx(ctx, false, func(q querier) error {
		out = nil
		rs, err := q.query(ctx, `SELECT hash, name, expires_at, created_at, last_used_at FROM api_tokens
			WHERE user_name = $1 AND kind = $2 ORDER BY created_at, hash`, user, kind)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			t := APIToken{User: user, Kind: kind}
			var exp, used sql.NullTime
			if err := rs.Scan(&t.Hash, &t.Name, &exp, &t.CreatedAt, &used); err != nil {
				return err
			}
			t.CreatedAt = t.CreatedAt.UTC()
			if exp.Valid {
				t.ExpiresAt = exp.Time.UTC()
			}
			if used.Valid {
				t.LastUsedAt = used.Time.UTC()
			}
			out = append(out, t)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list %s tokens of %q: %w", kind, user, err)
	}
	return out, nil
}
