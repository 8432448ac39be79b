package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// User is a person who logs in to the API. The password is stored only as
// a memory-hard hash made by the hub.
type User struct {
	Name         string
	PasswordHash string
	CreatedAt    time.Time
}

// Kinds of API tokens.
const (
	TokenKindSession = "session" // from POST /api/v1/login, short-lived
	TokenKindAPI     = "api"     // created for automation
)

// APIToken is a bearer token as stored: its SHA-256, never the token.
type APIToken struct {
	Hash       string
	User       string
	Kind       string // TokenKindSession or TokenKindAPI
	Name       string
	ExpiresAt  time.Time // zero: never expires
	CreatedAt  time.Time
	LastUsedAt time.Time // zero: never used
}

// IsExpired reports whether the token has expired at now.
func (t APIToken) IsExpired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// CreateUser creates a user. A user of that name existing already is
// ErrConflict, and the existing user is left alone: first-start code can
// race other hubs on it.
func (db *DB) CreateUser(ctx context.Context, u User) (User, error) {
	if u.Name == "" || u.PasswordHash == "" {
		return User{}, fmt.Errorf("create user: %w: need a name and a password hash", ErrInvalid)
	}
	u.CreatedAt = db.clock()
	err := db.tx(ctx, true, func(q querier) error {
		n, err := q.exec(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO NOTHING`, u.Name, u.PasswordHash, u.CreatedAt)
		if err == nil && n == 0 {
			err = ErrConflict
		}
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return u, nil
}

// GetUser returns a user.
func (db *DB) GetUser(ctx context.Context, name string) (User, error) {
	u := User{Name: name}
	err := db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, "SELECT password_hash, created_at FROM users WHERE name = $1", name).Scan(&u.PasswordHash, &u.CreatedAt)
	})
	if isNoRows(err) {
		return User{}, fmt.Errorf("user %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return User{}, fmt.Errorf("read user %q: %w", name, err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// CreateAPIToken records a bearer token by its hash; the user must exist.
func (db *DB) CreateAPIToken(ctx context.Context, t APIToken) (APIToken, error) {
	if t.Hash == "" || t.User == "" || (t.Kind != TokenKindSession && t.Kind != TokenKindAPI) {
		return APIToken{}, fmt.Errorf("create api token: %w: need a hash, a user and kind session or api", ErrInvalid)
	}
	t.CreatedAt = db.clock()
	var exp any
	if !t.ExpiresAt.IsZero() {
		t.ExpiresAt = ts(t.ExpiresAt)
		exp = t.ExpiresAt
	}
	err := db.tx(ctx, true, func(q querier) error {
		var one int
		if err := q.queryRow(ctx, "SELECT 1 FROM users WHERE name = $1", t.User).Scan(&one); err != nil {
			if isNoRows(err) {
				return fmt.Errorf("user %q: %w", t.User, ErrNotFound)
			}
			return err
		}
		_, err := q.exec(ctx, `INSERT INTO api_tokens (hash, user_name, kind, name, expires_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6)`, t.Hash, t.User, t.Kind, t.Name, exp, t.CreatedAt)
		return err
	})
	if err != nil {
		return APIToken{}, fmt.Errorf("create api token for %q: %w", t.User, err)
	}
	return t, nil
}

// touchInterval bounds how often UseAPIToken writes last_used_at, so that a
// busy client does not turn every request into a write.
const touchInterval = time.Minute

// UseAPIToken returns the token with this hash (ErrNotFound if none) and
// records now as its last use when the recorded one is older than a
// minute. Expiry is the caller's to check (APIToken.IsExpired).
func (db *DB) UseAPIToken(ctx context.Context, hash string, now time.Time) (APIToken, error) {
	t := APIToken{Hash: hash}
	var exp, used sql.NullTime
	err := db.tx(ctx, false, func(q querier) error {
		return q.queryRow(ctx, `SELECT user_name, kind, name, expires_at, created_at, last_used_at
			FROM api_tokens WHERE hash = $1`, hash).Scan(&t.User, &t.Kind, &t.Name, &exp, &t.CreatedAt, &used)
	})
	if isNoRows(err) {
		return APIToken{}, fmt.Errorf("api token: %w", ErrNotFound)
	}
	if err != nil {
		return APIToken{}, fmt.Errorf("read api token: %w", err)
	}
	t.CreatedAt = t.CreatedAt.UTC()
	if exp.Valid {
		t.ExpiresAt = exp.Time.UTC()
	}
	if used.Valid {
		t.LastUsedAt = used.Time.UTC()
	}
	now = ts(now)
	if t.LastUsedAt.IsZero() || now.Sub(t.LastUsedAt) >= touchInterval {
		err := db.tx(ctx, true, func(q querier) error {
			_, err := q.exec(ctx, "UPDATE api_tokens SET last_used_at = $2 WHERE hash = $1", hash, now)
			return err
		})
		if err != nil {
			return APIToken{}, fmt.Errorf("record api token use: %w", err)
		}
		t.LastUsedAt = now
	}
	return t, nil
}

// DeleteAPIToken deletes a token (logout, revocation); a missing one is
// ErrNotFound.
func (db *DB) DeleteAPIToken(ctx context.Context, hash string) error {
	err := db.tx(ctx, true, func(q querier) error {
		n, err := q.exec(ctx, "DELETE FROM api_tokens WHERE hash = $1", hash)
		if err == nil && n == 0 {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete api token: %w", err)
	}
	return nil
}
