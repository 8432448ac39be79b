package ca

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/nxmesh/nxmesh/pki"
)

// Errors Enroll returns, one per reason a token is refused, so the HTTP
// layer and the CLI can say which.
var (
	ErrTokenExpired   = errors.New("enrollment token expired: ask an operator for a new one")
	ErrTokenUsed      = errors.New("enrollment token already used: ask an operator for a new one")
	ErrTokenMalformed = errors.New("enrollment token is malformed: check it was copied whole")
	ErrTokenForeign   = errors.New("enrollment token was not issued by this hub's CA: check the hub address and trust domain")
	ErrTokenUnknown   = errors.New("enrollment token is not known to this CA: it was deleted or never recorded")
	ErrCSRInvalid     = errors.New("certificate request is invalid")
)

// TokenRequest describes an enrollment token.
type TokenRequest struct {
	// Workspace the agent will belong to; empty for relays.
	Workspace string
	// Role is pki.RoleAgent or pki.RoleRelay.
	Role pki.Role
	// Labels are carried in the token and returned by Enroll.
	Labels map[string]string
	// TTL defaults to one hour.
	TTL time.Duration
	// Uses defaults to one; each use yields a distinct identity.
	Uses int
}

// Validate checks the request after defaults are applied.
func (r *TokenRequest) Validate() error {
	switch r.Role {
	case pki.RoleAgent:
		if err := pki.ValidateSegment("workspace", r.Workspace); err != nil {
			return fmt.Errorf("token request: %w", err)
		}
	case pki.RoleRelay:
		if r.Workspace != "" {
			return errors.New("token request: a relay token has no workspace")
		}
	default:
		return fmt.Errorf("token request: role %q must be agent or relay", r.Role)
	}
	if r.TTL < 0 || r.TTL > 30*24*time.Hour {
		return fmt.Errorf("token request: ttl %s must be between 0 and 720h", r.TTL)
	}
	if r.Uses < 0 || r.Uses > 100000 {
		return fmt.Errorf("token request: uses %d must be between 1 and 100000", r.Uses)
	}
	if len(r.Labels) > 64 {
		return fmt.Errorf("token request: %d labels, at most 64", len(r.Labels))
	}
	for k, v := range r.Labels {
		if len(k) == 0 || len(k) > 63 || len(v) > 253 {
			return fmt.Errorf("token request: label %q: keys must be 1 to 63 bytes, values at most 253", k)
		}
	}
	return nil
}

// tokenClaims is the JWT payload of an enrollment token: the standard
// claims step-ca's JWK provisioner checks (iss, aud, sub, exp, nbf, iat,
// jti) plus what the token grants, under "nxmesh".
type tokenClaims struct {
	jose.Claims
	NxMesh grant `json:"nxmesh"`
}

// grant is what an enrollment token binds the enrollment to.
type grant struct {
	TrustDomain string            `json:"td"`
	Workspace   string            `json:"ws,omitempty"`
	Role        pki.Role          `json:"role"`
	Labels      map[string]string `json:"labels,omitempty"`
	// RootFingerprint lets the client pin the hub's root on first contact.
	RootFingerprint string `json:"root_sha256"`
}

// NewEnrollmentToken mints a token and records its jti and use count in the
// store. The token is a compact JWS (ES256) signed by the CA's JWK
// provisioner key.
func (c *CA) NewEnrollmentToken(ctx context.Context, req TokenRequest) (string, error) {
	if req.TTL == 0 {
		req.TTL = time.Hour
	}
	if req.Uses == 0 {
		req.Uses = 1
	}
	if err := req.Validate(); err != nil {
		return "", err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	jti := hex.EncodeToString(b[:])
	now := c.cfg.Clock()
	claims := tokenClaims{
		Claims: jose.Claims{
			ID:        jti,
			Issuer:    provisionerName,
			Subject:   string(req.Role),
			Audience:  jose.Audience{c.audience},
			IssuedAt:  jose.NewNumericDate(now),
			NotBefore: jose.NewNumericDate(now),
			Expiry:    jose.NewNumericDate(now.Add(req.TTL)),
		},
		NxMesh: grant{
			TrustDomain:     c.cfg.TrustDomain,
			Workspace:       req.Workspace,
			Role:            req.Role,
			Labels:          req.Labels,
			RootFingerprint: c.fingerprint,
		},
	}
	tok, err := jose.Signed(c.signer).Claims(claims).CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign enrollment token: %w", err)
	}
	if err := c.cfg.Storage.CreateToken(ctx, TokenRecord{
		ID: jti, Workspace: req.Workspace, Role: string(req.Role), Labels: req.Labels,
		Uses: req.Uses, ExpiresAt: now.Add(req.TTL), CreatedAt: now,
	}); err != nil {
		return "", fmt.Errorf("record enrollment token: %w", err)
	}
	return tok, nil
}

// checkToken verifies a token completely before step-ca sees it: step-ca's
// authorizeToken consumes the jti before the provisioner verifies the
// signature and expiry, so an unchecked forged or expired token would burn a
// use and every refusal would read "token already used".
func (c *CA) checkToken(token string) (*tokenClaims, error) {
	jwt, err := jose.ParseSigned(token)
	if err != nil {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrTokenMalformed)
	}
	var claims tokenClaims
	if err := jwt.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return nil, fmt.Errorf("%w: payload is not JSON claims", ErrTokenMalformed)
	}
	if len(jwt.Headers) != 1 || jwt.Headers[0].KeyID != c.kid {
		return nil, fmt.Errorf("%w: signed by key %q, not this CA's provisioner", ErrTokenForeign, firstKID(jwt))
	}
	if err := jwt.Claims(c.provKey.Public(), &claims); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify", ErrTokenForeign)
	}
	if claims.Issuer != provisionerName || !claims.Audience.Contains(c.audience) || claims.NxMesh.TrustDomain != c.cfg.TrustDomain {
		return nil, fmt.Errorf("%w: issued for trust domain %q", ErrTokenForeign, claims.NxMesh.TrustDomain)
	}
	if claims.ID == "" || claims.Expiry == nil {
		return nil, fmt.Errorf("%w: jti or exp missing", ErrTokenMalformed)
	}
	g := claims.NxMesh
	switch g.Role {
	case pki.RoleAgent:
		if pki.ValidateSegment("workspace", g.Workspace) != nil {
			return nil, fmt.Errorf("%w: bad workspace", ErrTokenMalformed)
		}
	case pki.RoleRelay:
		if g.Workspace != "" {
			return nil, fmt.Errorf("%w: relay token with a workspace", ErrTokenMalformed)
		}
	default:
		return nil, fmt.Errorf("%w: role %q", ErrTokenMalformed, g.Role)
	}
	now := c.cfg.Clock()
	if !now.Before(claims.Expiry.Time()) {
		return nil, fmt.Errorf("%w (expired at %s)", ErrTokenExpired, claims.Expiry.Time().UTC().Format(time.RFC3339))
	}
	if claims.NotBefore != nil && now.Add(time.Minute).Before(claims.NotBefore.Time()) {
		return nil, fmt.Errorf("%w: not valid before %s; check the clocks", ErrTokenMalformed, claims.NotBefore.Time().UTC())
	}
	return &claims, nil
}

func firstKID(jwt *jose.JSONWebToken) string {
	if len(jwt.Headers) == 0 {
		return ""
	}
	return jwt.Headers[0].KeyID
}

// internalToken signs a short-lived token for in-process issuance.
func (c *CA) internalToken(id pki.Identity) (string, error) {
	now := c.cfg.Clock()
	claims := tokenClaims{
		Claims: jose.Claims{
			ID: "internal", Issuer: provisionerName, Subject: string(id.Role),
			Audience: jose.Audience{c.audience}, IssuedAt: jose.NewNumericDate(now),
			NotBefore: jose.NewNumericDate(now), Expiry: jose.NewNumericDate(now.Add(time.Minute)),
		},
		NxMesh: grant{TrustDomain: c.cfg.TrustDomain, Role: id.Role, RootFingerprint: c.fingerprint},
	}
	return jose.Signed(c.signer).Claims(claims).CompactSerialize()
}
