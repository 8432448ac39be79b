package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// Source holds the current certificate of a process. TLS configs read it on
// every handshake through GetCertificate / GetClientCertificate and the
// Renewer swaps it atomically, so a renewal never leaves a window in which a
// handshake has no valid certificate.
type Source struct {
	cur atomic.Pointer[tls.Certificate]
	// leaf is cur with the leaf alone, what clients present: servers of
	// the trust domain know its intermediate already (ServerTLSConfig),
	// and a relay keeps every client's chain for the session's lifetime,
	// so an intermediate sent and parsed per connection is memory spent
	// ten thousand times over.
	leaf atomic.Pointer[tls.Certificate]
}

// NewSource returns a Source serving cert. cert.Leaf is parsed if unset.
func NewSource(cert tls.Certificate) (*Source, error) {
	s := &Source{}
	if err := s.Store(cert); err != nil {
		return nil, err
	}
	return s, nil
}

// Store replaces the current certificate.
func (s *Source) Store(cert tls.Certificate) error {
	if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return errors.New("store certificate: chain or private key missing")
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return fmt.Errorf("store certificate: %w", err)
		}
		cert.Leaf = leaf
	}
	leafOnly := cert
	leafOnly.Certificate = cert.Certificate[:1]
	s.cur.Store(&cert)
	s.leaf.Store(&leafOnly)
	return nil
}

// intermediates returns the CA certificates of the current chain, after
// the leaf.
func (s *Source) intermediates() ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, der := range s.Current().Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("parse own certificate chain: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

// Current returns the certificate handshakes use now. Callers must not
// modify it.
func (s *Source) Current() *tls.Certificate { return s.cur.Load() }

// GetCertificate implements tls.Config.GetCertificate.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.Current(), nil
}

// GetClientCertificate implements tls.Config.GetClientCertificate: the
// leaf alone, without its intermediate (see Source.leaf).
func (s *Source) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.leaf.Load(), nil
}

// Peer says which peers a TLS config accepts.
type Peer struct {
	// TrustDomain the peer's URI SAN must name.
	TrustDomain string
	// Roots are the trust domain's root certificates.
	Roots *x509.CertPool
	// Roles the peer may have; at least one.
	Roles []Role
	// IsRevoked, when set, is asked about the peer leaf's serial (decimal)
	// on every handshake; a revoked or unknown answer fails the handshake.
	IsRevoked func(serial string) (bool, error)
	// Time, when set, replaces time.Now for certificate validity checks
	// (tests with a fake clock).
	Time func() time.Time
}

// ErrPeerRejected is wrapped by every peer verification failure.
var ErrPeerRejected = errors.New("peer certificate rejected")

func (p Peer) validate() error {
	if err := ValidateTrustDomain(p.TrustDomain); err != nil {
		return err
	}
	if p.Roots == nil {
		return errors.New("tls config: no root certificates for the trust domain")
	}
	if len(p.Roles) == 0 {
		return errors.New("tls config: no peer role allowed")
	}
	for _, r := range p.Roles {
		if !r.Valid() {
			return fmt.Errorf("tls config: unknown peer role %q", r)
		}
	}
	return nil
}

// ServerTLSConfig returns a TLS 1.3 server config that presents src's
// certificate, requires a client certificate chaining to peer.Roots, and
// accepts only peers whose URI SAN is in peer.TrustDomain with one of
// peer.Roles.
func ServerTLSConfig(src *Source, peer Peer) (*tls.Config, error) {
	if err := peer.validate(); err != nil {
		return nil, err
	}
	// Clients present their leaf alone; its issuer is the intermediate of
	// this server's own chain (one CA per trust domain), so that joins the
	// roots as a trust anchor. It grants nothing the root does not: it is
	// the root's own intermediate.
	inter, err := src.intermediates()
	if err != nil {
		return nil, err
	}
	clientCAs := peer.Roots
	if len(inter) > 0 {
		clientCAs = peer.Roots.Clone()
		for _, c := range inter {
			clientCAs.AddCert(c)
		}
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		MaxVersion:     tls.VersionTLS13,
		GetCertificate: src.GetCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      clientCAs,
		Time:           peer.Time,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) == 0 {
				return fmt.Errorf("%w: no verified chain", ErrPeerRejected)
			}
			return peer.check(cs.VerifiedChains[0][0])
		},
	}, nil
}

// ClientTLSConfig returns a TLS 1.3 client config that presents src's
// certificate and accepts only a server whose chain leads to peer.Roots and
// whose URI SAN is in peer.TrustDomain with one of peer.Roles.
//
// The server is identified by its URI SAN, not its host name: the standard
// host name check is replaced by a full chain verification in
// VerifyConnection (the SPIFFE model), so InsecureSkipVerify is set but
// nothing is skipped.
func ClientTLSConfig(src *Source, peer Peer) (*tls.Config, error) {
	if err := peer.validate(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		MaxVersion:           tls.VersionTLS13,
		GetClientCertificate: src.GetClientCertificate,
		RootCAs:              peer.Roots,
		Time:                 peer.Time,
		InsecureSkipVerify:   true, //nolint:gosec // VerifyConnection verifies the chain and the URI SAN.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.DidResume {
				return peer.checkResumed(cs.PeerCertificates)
			}
			leaf, err := peer.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			return peer.check(leaf)
		},
	}, nil
}

// checkResumed accepts a resumed session's server. Its chain was verified,
// by VerifyConnection, in the full handshake that issued the ticket, and
// the server proved it holds that session's secret; the signatures are not
// checked again (two ECDSA verifications, a third of a resumed handshake's
// client CPU). What can have changed since is checked: the leaf's validity
// at the current time (crypto/tls already declines to offer a ticket whose
// certificate expired; this keeps the rule visible here) and the identity
// rules, revocation included.
func (p Peer) checkResumed(certs []*x509.Certificate) error {
	if len(certs) == 0 {
		return fmt.Errorf("%w: resumed session has no certificate", ErrPeerRejected)
	}
	leaf, now := certs[0], time.Now()
	if p.Time != nil {
		now = p.Time()
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: resumed session's certificate is not valid at %s", ErrPeerRejected, now.UTC().Format(time.RFC3339))
	}
	return p.check(leaf)
}

// verifyChain verifies certs[0] up to peer.Roots with certs[1:] as
// intermediates.
func (p Peer) verifyChain(certs []*x509.Certificate, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: peer sent no certificate", ErrPeerRejected)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	now := time.Now()
	if p.Time != nil {
		now = p.Time()
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         p.Roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPeerRejected, err)
	}
	return certs[0], nil
}

// check applies the identity and revocation rules to a verified leaf.
func (p Peer) check(leaf *x509.Certificate) error {
	id, err := IdentityFromCert(leaf)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrPeerRejected, err)
	}
	if id.TrustDomain != p.TrustDomain {
		return fmt.Errorf("%w: %s is not in trust domain %s", ErrPeerRejected, id, p.TrustDomain)
	}
	if !slices.Contains(p.Roles, id.Role) {
		return fmt.Errorf("%w: %s has role %s, want one of %v", ErrPeerRejected, id, id.Role, p.Roles)
	}
	if p.IsRevoked != nil {
		revoked, err := p.IsRevoked(leaf.SerialNumber.String())
		if err != nil {
			return fmt.Errorf("%w: revocation check for %s: %w", ErrPeerRejected, id, err)
		}
		if revoked {
			return fmt.Errorf("%w: certificate %s of %s is revoked", ErrPeerRejected, leaf.SerialNumber, id)
		}
	}
	return nil
}

// PeerIdentity returns the identity of the peer of a completed handshake made
// with ServerTLSConfig or ClientTLSConfig (which have already verified the
// chain and the role).
func PeerIdentity(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil || !cs.HandshakeComplete {
		return Identity{}, errors.New("peer identity: handshake not complete")
	}
	if len(cs.VerifiedChains) > 0 {
		return IdentityFromCert(cs.VerifiedChains[0][0])
	}
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("peer identity: peer sent no certificate")
	}
	return IdentityFromCert(cs.PeerCertificates[0])
}
