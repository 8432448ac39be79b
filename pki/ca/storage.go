package ca

import (
	"context"
	"errors"
	"time"
)

// Storage is what the CA needs from the hub store. Every hub on the same
// database shares it, which is what makes the CA, token single use and
// revocation hold across hubs. Implementations must be safe for concurrent
// use.
type Storage interface {
	// GetCA returns the sealed CA material, or an error wrapping
	// ErrNotFound when none was created yet.
	GetCA(ctx context.Context) ([]byte, error)
	// CreateCA stores sealed CA material if, and only if, none exists
	// ("INSERT ... ON CONFLICT DO NOTHING"), and returns an error wrapping
	// ErrExists when another hub won the race; the caller then re-reads.
	CreateCA(ctx context.Context, sealed []byte) error

	// CreateToken records a newly minted enrollment token.
	CreateToken(ctx context.Context, t TokenRecord) error
	// ConsumeToken atomically takes one use of the token with this jti:
	// "UPDATE ... SET remaining = remaining - 1 WHERE jti = $1 AND
	// remaining > 0" and rows affected == 1 means TokenConsumed. Otherwise
	// it reports TokenUsedUp when the jti exists, TokenUnknown when not.
	ConsumeToken(ctx context.Context, jti string) (TokenUse, error)

	// RecordCertificate records an issued certificate.
	RecordCertificate(ctx context.Context, c CertRecord) error
	// Revoke marks a serial revoked; revoking twice is not an error.
	Revoke(ctx context.Context, r Revocation) error
	// IsRevoked reports whether a serial was revoked.
	IsRevoked(ctx context.Context, serial string) (bool, error)
}

// ErrNotFound is returned (wrapped) by Storage.GetCA when no CA exists.
var ErrNotFound = errors.New("not found")

// ErrExists is returned (wrapped) by Storage.CreateCA when a CA exists.
var ErrExists = errors.New("already exists")

// TokenUse is the outcome of Storage.ConsumeToken.
type TokenUse int

// Outcomes of consuming one use of an enrollment token.
const (
	TokenConsumed TokenUse = iota + 1 // one use taken, go ahead
	TokenUsedUp                       // known jti with no use left
	TokenUnknown                      // jti never recorded (or deleted)
)

// TokenRecord is an enrollment token as the store keeps it. The token string
// itself is not stored: only its jti and what it grants.
type TokenRecord struct {
	ID        string // the JWT jti
	Workspace string // empty for relays
	Role      string // "agent" or "relay"
	Labels    map[string]string
	Uses      int
	ExpiresAt time.Time
	CreatedAt time.Time
}

// CertRecord is an issued certificate as the store keeps it.
type CertRecord struct {
	Serial    string // decimal
	Identity  string // the SPIFFE URI
	NotBefore time.Time
	NotAfter  time.Time
}

// Revocation is one revoked serial.
type Revocation struct {
	Serial    string // decimal
	Reason    string
	RevokedAt time.Time
}
