package hub

import (
	"context"
	"errors"
	"fmt"

	"github.com/nxmesh/nxmesh/hub/store"
	"github.com/nxmesh/nxmesh/pki/ca"
)

// caStorage adapts *store.DB to ca.Storage. hub/store may not import pki/ca
// (DESIGN.md's arrows), so the store has its own types and this converts.
type caStorage struct{ db *store.DB }

var _ ca.Storage = caStorage{}

func (s caStorage) GetCA(ctx context.Context) ([]byte, error) {
	b, err := s.db.GetCA(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ca.ErrNotFound, err)
	}
	return b, err
}

func (s caStorage) CreateCA(ctx context.Context, sealed []byte) error {
	err := s.db.CreateCA(ctx, sealed)
	if errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("%w: %w", ca.ErrExists, err)
	}
	return err
}

func (s caStorage) CreateToken(ctx context.Context, t ca.TokenRecord) error {
	return s.db.CreateToken(ctx, store.TokenRecord{
		JTI: t.ID, Workspace: t.Workspace, Role: t.Role, Labels: t.Labels,
		Remaining: t.Uses, ExpiresAt: t.ExpiresAt, CreatedAt: t.CreatedAt,
	})
}

func (s caStorage) ConsumeToken(ctx context.Context, jti string) (ca.TokenUse, error) {
	use, err := s.db.ConsumeToken(ctx, jti)
	if err != nil {
		return 0, err
	}
	switch use {
	case store.TokenConsumed:
		return ca.TokenConsumed, nil
	case store.TokenUsedUp:
		return ca.TokenUsedUp, nil
	default:
		return ca.TokenUnknown, nil
	}
}

func (s caStorage) RecordCertificate(ctx context.Context, c ca.CertRecord) error {
	return s.db.RecordCertificate(ctx, store.CertRecord{Serial: c.Serial, Identity: c.Identity, NotBefore: c.NotBefore, NotAfter: c.NotAfter})
}

func (s caStorage) Revoke(ctx context.Context, r ca.Revocation) error {
	return s.db.Revoke(ctx, store.Revocation{Serial: r.Serial, Reason: r.Reason, RevokedAt: r.RevokedAt})
}

func (s caStorage) IsRevoked(ctx context.Context, serial string) (bool, error) {
	return s.db.IsRevoked(ctx, serial)
}
