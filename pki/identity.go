// Package pki owns NxMesh identities and the client half of its PKI: SPIFFE
// URIs, P-256 keys and CSRs, the on-disk key and certificate layout, root
// pinning, mutual-TLS configurations and certificate renewal.
//
// The agent and the relay link this package, so it imports nothing of NxMesh
// and nothing of the CA server or any database driver: stdlib only. The
// embedded CA lives in pki/ca, which only the hub links.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Role is the kind of process an identity names.
type Role string

// The three roles of an NxMesh installation.
const (
	RoleHub   Role = "hub"
	RoleRelay Role = "relay"
	RoleAgent Role = "agent"
)

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	return r == RoleHub || r == RoleRelay || r == RoleAgent
}

// ErrInvalidIdentity is wrapped by every identity parsing error.
var ErrInvalidIdentity = errors.New("invalid identity")

// Identity is what a certificate proves about its holder, encoded as a
// SPIFFE-style URI SAN:
//
//	spiffe://<trust-domain>/hub/<id>
//	spiffe://<trust-domain>/relay/<id>
//	spiffe://<trust-domain>/ws/<workspace>/agent/<id>
//
// Authorization decisions use this value, never a common name or anything a
// peer says about itself in a message.
type Identity struct {
	TrustDomain string
	Role        Role
	Workspace   string // agents only
	ID          string
}

// String returns the identity as its SPIFFE URI.
func (id Identity) String() string {
	switch id.Role {
	case RoleAgent:
		return "spiffe://" + id.TrustDomain + "/ws/" + id.Workspace + "/agent/" + id.ID
	default:
		return "spiffe://" + id.TrustDomain + "/" + string(id.Role) + "/" + id.ID
	}
}

// URI returns the identity as a URL for a certificate's URI SAN.
func (id Identity) URI() *url.URL {
	u := &url.URL{Scheme: "spiffe", Host: id.TrustDomain}
	if id.Role == RoleAgent {
		u.Path = "/ws/" + id.Workspace + "/agent/" + id.ID
	} else {
		u.Path = "/" + string(id.Role) + "/" + id.ID
	}
	return u
}

// Validate checks every field against the same grammar ParseIdentity uses.
func (id Identity) Validate() error {
	if err := ValidateTrustDomain(id.TrustDomain); err != nil {
		return err
	}
	if !id.Role.Valid() {
		return fmt.Errorf("%w: role %q is not hub, relay or agent", ErrInvalidIdentity, id.Role)
	}
	if err := ValidateSegment("id", id.ID); err != nil {
		return err
	}
	if id.Role == RoleAgent {
		return ValidateSegment("workspace", id.Workspace)
	}
	if id.Workspace != "" {
		return fmt.Errorf("%w: a %s identity has no workspace (got %q)", ErrInvalidIdentity, id.Role, id.Workspace)
	}
	return nil
}

// ParseIdentity parses a SPIFFE URI strictly: scheme spiffe, a lower-case
// trust domain without port or user info, no query or fragment, no escaped or
// empty path segments, and exactly one of the three shapes Identity lists.
func ParseIdentity(s string) (Identity, error) {
	if len(s) > 2048 {
		return Identity{}, fmt.Errorf("%w: uri longer than 2048 bytes", ErrInvalidIdentity)
	}
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %q is not a uri", ErrInvalidIdentity, s)
	}
	return IdentityFromURI(u)
}

// IdentityFromURI is ParseIdentity for an already parsed URL, such as one
// from a certificate's URIs.
func IdentityFromURI(u *url.URL) (Identity, error) {
	bad := func(why string) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: %q: %s", ErrInvalidIdentity, u.String(), why)
	}
	switch {
	case u.Scheme != "spiffe":
		return bad("scheme must be spiffe")
	case u.Opaque != "":
		return bad("uri must be spiffe://<trust-domain>/...")
	case u.User != nil:
		return bad("user info is not allowed")
	case u.Port() != "" || strings.Contains(u.Host, ":"):
		return bad("port is not allowed")
	case u.RawQuery != "" || u.ForceQuery:
		return bad("query is not allowed")
	case u.Fragment != "" || u.RawFragment != "":
		return bad("fragment is not allowed")
	case u.RawPath != "":
		return bad("escaped characters are not allowed in the path")
	}
	if err := ValidateTrustDomain(u.Host); err != nil {
		return Identity{}, err
	}
	if !strings.HasPrefix(u.Path, "/") {
		return bad("path must start with /")
	}
	parts := strings.Split(u.Path[1:], "/")
	id := Identity{TrustDomain: u.Host}
	switch {
	case len(parts) == 2 && (parts[0] == string(RoleHub) || parts[0] == string(RoleRelay)):
		id.Role, id.ID = Role(parts[0]), parts[1]
	case len(parts) == 4 && parts[0] == "ws" && parts[2] == string(RoleAgent):
		id.Role, id.Workspace, id.ID = RoleAgent, parts[1], parts[3]
	default:
		return bad("path must be /hub/<id>, /relay/<id> or /ws/<workspace>/agent/<id>")
	}
	if err := id.Validate(); err != nil {
		return Identity{}, err
	}
	return id, nil
}

// IdentityFromCert returns the identity in a certificate's URI SAN. A
// certificate with no spiffe URI, or more than one URI SAN, has no identity.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("%w: no certificate", ErrInvalidIdentity)
	}
	if len(cert.URIs) != 1 {
		return Identity{}, fmt.Errorf("%w: certificate %s has %d URI SANs, want exactly one spiffe URI",
			ErrInvalidIdentity, cert.SerialNumber, len(cert.URIs))
	}
	return IdentityFromURI(cert.URIs[0])
}

// ValidateTrustDomain checks a trust domain: lower-case DNS-like labels of
// letters, digits and hyphens, at most 255 bytes.
func ValidateTrustDomain(td string) error {
	if td == "" || len(td) > 255 {
		return fmt.Errorf("%w: trust domain %q must be 1 to 255 bytes", ErrInvalidIdentity, td)
	}
	for _, label := range strings.Split(td, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: trust domain %q has an empty or over-long label", ErrInvalidIdentity, td)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("%w: trust domain %q may hold only a-z, 0-9 and inner hyphens", ErrInvalidIdentity, td)
			}
		}
	}
	return nil
}

// ValidateSegment checks a workspace name or an id: 1 to 128 bytes of
// letters, digits, '.', '_' and '-', starting with a letter or digit. field
// names the value in the error.
func ValidateSegment(field, s string) error {
	if s == "" || len(s) > 128 {
		return fmt.Errorf("%w: %s %q must be 1 to 128 bytes", ErrInvalidIdentity, field, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return fmt.Errorf("%w: %s %q may hold only letters, digits, '.', '_' and '-' and must start with a letter or digit", ErrInvalidIdentity, field, s)
		}
	}
	return nil
}
