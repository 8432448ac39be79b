package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"time"

	"github.com/google/uuid"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/provisioner"

	"github.com/nxmesh/nxmesh/pki"
)

// ErrRevoked means a certificate was revoked; it cannot be renewed.
var ErrRevoked = errors.New("certificate is revoked: enroll again with a new enrollment token")

// ErrNotOurs means a certificate presented for renewal was not issued by
// this CA.
var ErrNotOurs = errors.New("certificate was not issued by this CA")

// Issued is a signed certificate and what it proves.
type Issued struct {
	Identity pki.Identity
	// Labels from the enrollment token (nil on renewal).
	Labels map[string]string
	// Leaf is the new certificate; Chain is leaf then intermediate.
	Leaf  *x509.Certificate
	Chain []*x509.Certificate
	// ChainPEM is Chain as PEM, the content of agent.crt / relay.crt.
	ChainPEM []byte
}

// Enroll redeems an enrollment token for a certificate on csr's public key
// (PEM or DER). The identity comes from the token (role, workspace) and the
// CA (a new UUID as id); nothing else the CSR asks for is granted.
func (c *CA) Enroll(ctx context.Context, token string, csr []byte) (*Issued, error) {
	return c.EnrollWithID(ctx, token, csr, "")
}

// EnrollWithID is Enroll with an id chosen by the caller (for example an
// agent id the hub already allocated); an empty id means a new UUID.
func (c *CA) EnrollWithID(ctx context.Context, token string, csr []byte, id string) (*Issued, error) {
	claims, err := c.checkToken(token)
	if err != nil {
		return nil, err
	}
	req, err := parseCSR(csr)
	if err != nil {
		return nil, err
	}
	if id == "" {
		id = uuid.NewString()
	}
	ident := pki.Identity{TrustDomain: c.cfg.TrustDomain, Role: claims.NxMesh.Role, Workspace: claims.NxMesh.Workspace, ID: id}
	if err := ident.Validate(); err != nil {
		return nil, err
	}

	// step-ca: resolve the provisioner from the token, consume one use of
	// its jti through authDB.UseToken (the shared store), then verify it.
	actx := provisioner.NewContextWithMethod(authority.NewContext(ctx, c.auth), provisioner.SignMethod)
	opts, err := c.auth.Authorize(actx, token)
	switch {
	case errors.Is(err, errTokenUsedUp):
		return nil, ErrTokenUsed
	case errors.Is(err, errTokenUnknown):
		return nil, ErrTokenUnknown
	case err != nil:
		return nil, fmt.Errorf("authorize enrollment token: %w", err)
	}
	iss, err := c.sign(actx, req, opts, ident, nil, nil)
	if err != nil {
		return nil, err
	}
	iss.Labels = claims.NxMesh.Labels
	c.cfg.Logger.Info("certificate issued", "identity", ident.String(), "serial", iss.Leaf.SerialNumber.String(),
		"not_after", iss.Leaf.NotAfter.UTC())
	return iss, nil
}

// parseCSR accepts PEM or DER and checks the proof of possession and the key
// type (ECDSA P-256).
func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	if b, _ := pem.Decode(data); b != nil {
		if b.Type != "CERTIFICATE REQUEST" && b.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrCSRInvalid, b.Type)
		}
		data = b.Bytes
	}
	req, err := x509.ParseCertificateRequest(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSRInvalid, err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify", ErrCSRInvalid)
	}
	pub, ok := req.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: key must be ECDSA P-256", ErrCSRInvalid)
	}
	return req, nil
}

// sign hands the request to step-ca with the CA's decisions attached. The
// request step-ca sees keeps only the public key and the proof of
// possession (raw bytes and signature, so step-ca's own signature check
// passes): no subject, SANs or extensions, so its SAN validators have
// nothing to refuse and its template nothing to copy. identityModifier then
// sets everything the certificate says.
func (c *CA) sign(ctx context.Context, req *x509.CertificateRequest, opts []provisioner.SignOption,
	id pki.Identity, dns []string, ips []net.IP) (*Issued, error) {
	bare := &x509.CertificateRequest{
		Raw:                      req.Raw,
		RawTBSCertificateRequest: req.RawTBSCertificateRequest,
		RawSubjectPublicKeyInfo:  req.RawSubjectPublicKeyInfo,
		Signature:                req.Signature,
		SignatureAlgorithm:       req.SignatureAlgorithm,
		PublicKeyAlgorithm:       req.PublicKeyAlgorithm,
		PublicKey:                req.PublicKey,
	}
	now := c.cfg.Clock()
	mod := &identityModifier{
		id: id, dns: dns, ips: ips,
		notBefore: now.Add(-c.cfg.Backdate),
		notAfter:  now.Add(c.cfg.CertLifetime),
	}
	all := make([]provisioner.SignOption, 0, len(opts)+1)
	all = append(all, opts...)
	all = append(all, mod)
	chain, err := c.auth.SignWithContext(ctx, bare, provisioner.SignOptions{}, all...)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	return newIssued(id, chain), nil
}

func newIssued(id pki.Identity, chain []*x509.Certificate) *Issued {
	return &Issued{Identity: id, Leaf: chain[0], Chain: chain, ChainPEM: pki.EncodeCertsPEM(chain...)}
}

// stepProvisionerOID is step-ca's provisioner extension, which renewal uses
// to find the provisioner; the only extension kept from step-ca's template.
var stepProvisionerOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 37476, 9000, 64, 1}

// identityModifier is a step-ca CertificateModifier that runs after the
// provisioner's template and makes the certificate say exactly what the CA
// decided: one URI SAN (plus DNS/IP SANs for hubs), not a CA, the configured
// lifetime, digitalSignature, client and server auth.
type identityModifier struct {
	id                  pki.Identity
	dns                 []string
	ips                 []net.IP
	notBefore, notAfter time.Time
}

// Modify implements provisioner.CertificateModifier.
func (m *identityModifier) Modify(cert *x509.Certificate, _ provisioner.SignOptions) error {
	cert.RawSubject = nil
	cert.Subject = pkix.Name{CommonName: m.id.ID}
	cert.URIs = []*url.URL{m.id.URI()}
	cert.DNSNames = m.dns
	cert.IPAddresses = m.ips
	cert.EmailAddresses = nil
	cert.IsCA = false
	cert.BasicConstraintsValid = true
	cert.MaxPathLen, cert.MaxPathLenZero = 0, false
	cert.KeyUsage = x509.KeyUsageDigitalSignature
	cert.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
	cert.UnknownExtKeyUsage = nil
	cert.PermittedDNSDomains, cert.PermittedURIDomains, cert.PermittedIPRanges, cert.PermittedEmailAddresses = nil, nil, nil, nil
	cert.ExcludedDNSDomains, cert.ExcludedURIDomains, cert.ExcludedIPRanges, cert.ExcludedEmailAddresses = nil, nil, nil, nil
	cert.OCSPServer, cert.IssuingCertificateURL, cert.CRLDistributionPoints = nil, nil, nil
	cert.PolicyIdentifiers, cert.Policies = nil, nil
	keep := cert.ExtraExtensions[:0]
	for _, e := range cert.ExtraExtensions {
		if e.Id.Equal(stepProvisionerOID) {
			keep = append(keep, e)
		}
	}
	cert.ExtraExtensions = keep
	cert.NotBefore, cert.NotAfter = m.notBefore, m.notAfter
	return nil
}

// Renew issues a fresh certificate with the same identity and key as peer,
// the certificate the client presented over mTLS. It refuses certificates
// that are not ours, expired (pki.ErrExpired: enroll again) or revoked
// (ErrRevoked).
func (c *CA) Renew(ctx context.Context, peer *x509.Certificate) (*Issued, error) {
	if peer == nil {
		return nil, errors.New("renew: no certificate presented")
	}
	if err := peer.CheckSignatureFrom(c.intermediate); err != nil {
		return nil, fmt.Errorf("renew certificate %s: %w", peer.SerialNumber, ErrNotOurs)
	}
	id, err := pki.IdentityFromCert(peer)
	if err != nil || id.TrustDomain != c.cfg.TrustDomain {
		return nil, fmt.Errorf("renew certificate %s: %w: no identity in trust domain %s", peer.SerialNumber, ErrNotOurs, c.cfg.TrustDomain)
	}
	if !c.cfg.Clock().Before(peer.NotAfter) {
		return nil, fmt.Errorf("renew certificate %s of %s: %w", peer.SerialNumber, id, pki.ErrExpired)
	}
	revoked, err := c.IsRevoked(ctx, peer.SerialNumber.String())
	if err != nil {
		return nil, err
	}
	if revoked {
		return nil, fmt.Errorf("renew certificate %s of %s: %w", peer.SerialNumber, id, ErrRevoked)
	}
	// step-ca checks revocation again (through authDB), finds the
	// provisioner from the certificate's extension, applies its renewal
	// rules and signs a copy of peer with a fresh validity.
	chain, err := c.auth.RenewContext(ctx, peer, nil)
	if err != nil {
		return nil, fmt.Errorf("renew certificate %s of %s: %w", peer.SerialNumber, id, err)
	}
	return newIssued(id, chain), nil
}

// RenewFunc returns a pki.RenewFunc that renews through this CA directly,
// for the hub's own serving certificate (and tests).
func (c *CA) RenewFunc() pki.RenewFunc {
	return func(ctx context.Context, cur tls.Certificate) ([]*x509.Certificate, error) {
		iss, err := c.Renew(ctx, cur.Leaf)
		if err != nil {
			return nil, err
		}
		return iss.Chain, nil
	}
}

// Revoke records serial (decimal) as revoked in the shared store. Deleting
// an agent or relay revokes every serial recorded for its identity.
func (c *CA) Revoke(ctx context.Context, serial, reason string) error {
	if _, ok := new(big.Int).SetString(serial, 10); !ok {
		return fmt.Errorf("revoke: serial %q is not a decimal number", serial)
	}
	if err := c.cfg.Storage.Revoke(ctx, Revocation{Serial: serial, Reason: reason, RevokedAt: c.cfg.Clock()}); err != nil {
		return fmt.Errorf("revoke certificate %s: %w", serial, err)
	}
	return nil
}

// IsRevoked reports whether serial (decimal) was revoked. Hubs and relays
// use it as pki.Peer.IsRevoked.
func (c *CA) IsRevoked(ctx context.Context, serial string) (bool, error) {
	revoked, err := c.cfg.Storage.IsRevoked(ctx, serial)
	if err != nil {
		return false, fmt.Errorf("check revocation of %s: %w", serial, err)
	}
	return revoked, nil
}

// IssueHub issues the hub's own serving certificate: a new P-256 key made
// here, URI SAN spiffe://<td>/hub/<hubID>, plus DNS and IP SANs from hosts
// for its listen addresses. Keep it fresh with a pki.Renewer and RenewFunc.
func (c *CA) IssueHub(ctx context.Context, hubID string, hosts []string) (tls.Certificate, error) {
	return c.IssueLocal(ctx, pki.Identity{TrustDomain: c.cfg.TrustDomain, Role: pki.RoleHub, ID: hubID}, hosts)
}

// IssueLocal issues a certificate for a component that runs inside the hub
// process and so needs no enrollment: the hub itself, and the relay it
// embeds (role relay). The key is made here and never leaves the process.
func (c *CA) IssueLocal(ctx context.Context, id pki.Identity, hosts []string) (tls.Certificate, error) {
	if id.TrustDomain != c.cfg.TrustDomain || (id.Role != pki.RoleHub && id.Role != pki.RoleRelay) {
		return tls.Certificate{}, fmt.Errorf("issue local certificate: %s is not a hub or relay of %s", id, c.cfg.TrustDomain)
	}
	if err := id.Validate(); err != nil {
		return tls.Certificate{}, err
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	csrPEM, err := pki.NewCSR(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	req, err := parseCSR(csrPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	// The hub is the CA: it authorizes itself with a token that never
	// leaves this function, verified by the provisioner but not recorded,
	// so it consumes nothing in the store.
	tok, err := c.internalToken(id)
	if err != nil {
		return tls.Certificate{}, err
	}
	p, err := c.auth.LoadProvisionerByName(provisionerName)
	if err != nil {
		return tls.Certificate{}, err
	}
	actx := provisioner.NewContextWithMethod(authority.NewContext(ctx, c.auth), provisioner.SignMethod)
	opts, err := p.AuthorizeSign(actx, tok)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue certificate for %s: %w", id, err)
	}
	iss, err := c.sign(actx, req, opts, id, dns, ips)
	if err != nil {
		return tls.Certificate{}, err
	}
	return pki.NewCertificate(key, iss.Chain)
}
