package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/smallstep/certificates/db"
	"golang.org/x/crypto/ssh"

	"github.com/nxmesh/nxmesh/pki"
)

// authDB implements step-ca's db.AuthDB (and db.CertificateStorer) on top of
// Storage, so the authority's one-time-token and revocation checks hit the
// shared store instead of step-ca's per-process memory. step-ca's interface
// carries no context; each call gets storeTimeout.
type authDB struct {
	s     Storage
	clock func() time.Time
}

var (
	_ db.AuthDB            = (*authDB)(nil)
	_ db.CertificateStorer = (*authDB)(nil)
)

const storeTimeout = 10 * time.Second

// errTokenUsedUp and errTokenUnknown travel from UseToken through step-ca's
// error wrapping (which keeps Unwrap) back to Enroll.
var (
	errTokenUsedUp  = errors.New("token used up")
	errTokenUnknown = errors.New("token unknown")
)

func (d *authDB) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), storeTimeout)
}

// UseToken consumes one use of the token with this jti. step-ca treats
// (false, nil) as "token already used"; an error carries the distinction
// between used up and unknown.
func (d *authDB) UseToken(id, _ string) (bool, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	res, err := d.s.ConsumeToken(ctx, id)
	if err != nil {
		return false, fmt.Errorf("consume enrollment token: %w", err)
	}
	switch res {
	case TokenConsumed:
		return true, nil
	case TokenUsedUp:
		return false, errTokenUsedUp
	default:
		return false, errTokenUnknown
	}
}

func (d *authDB) IsRevoked(sn string) (bool, error) {
	ctx, cancel := d.ctx()
	defer cancel()
	return d.s.IsRevoked(ctx, sn)
}

func (d *authDB) Revoke(rci *db.RevokedCertificateInfo) error {
	ctx, cancel := d.ctx()
	defer cancel()
	return d.s.Revoke(ctx, Revocation{Serial: rci.Serial, Reason: rci.Reason, RevokedAt: rci.RevokedAt})
}

// StoreCertificate records every certificate step-ca signs, renewals
// included.
func (d *authDB) StoreCertificate(crt *x509.Certificate) error {
	ctx, cancel := d.ctx()
	defer cancel()
	rec := CertRecord{Serial: crt.SerialNumber.String(), NotBefore: crt.NotBefore, NotAfter: crt.NotAfter}
	if id, err := pki.IdentityFromCert(crt); err == nil {
		rec.Identity = id.String()
	}
	return d.s.RecordCertificate(ctx, rec)
}

// GetCertificate is only used by step-ca's token revocation flow, which
// NxMesh does not use.
func (d *authDB) GetCertificate(string) (*x509.Certificate, error) {
	return nil, db.ErrNotImplemented
}

// SSH is not enabled: these refuse or report nothing.

func (d *authDB) IsSSHRevoked(string) (bool, error)          { return false, nil }
func (d *authDB) RevokeSSH(*db.RevokedCertificateInfo) error { return db.ErrNotImplemented }
func (d *authDB) IsSSHHost(string) (bool, error)             { return false, nil }
func (d *authDB) GetSSHHostPrincipals() ([]string, error)    { return nil, nil }
func (d *authDB) StoreSSHCertificate(*ssh.Certificate) error { return db.ErrNotImplemented }
func (d *authDB) Shutdown() error                            { return nil }
