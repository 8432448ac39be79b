package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/nxmesh/nxmesh/pki"
)

// agentCmd and relayCmd are command groups: `run` joins them later.
type agentCmd struct {
	Enroll agentEnrollCmd `cmd:"" help:"Exchange an enrollment token for this agent's certificate."`
	Run    agentRunCmd    `cmd:"" help:"Run the agent: manage nginx and apply bundles from relays."`
}

type relayCmd struct {
	Enroll relayEnrollCmd `cmd:"" help:"Exchange an enrollment token for this relay's certificate."`
	Run    relayRunCmd    `cmd:"" help:"Run the relay: hold agent sessions and fan bundles out from hubs."`
}

type enrollFlags struct {
	Hub           string `help:"Hub API URL, such as https://hub.example:8443." required:"" env:"NXMESH_HUB"`
	Token         string `help:"Enrollment token from nxmesh token create." required:"" env:"NXMESH_ENROLL_TOKEN"`
	StateDir      string `help:"Directory for the key, the certificate chain and root.pem." required:"" type:"path"`
	CAFingerprint string `help:"SHA-256 fingerprint of the hub's root CA; default: the one the token carries." placeholder:"HEX"`
}

const enrollHelp = `Generates a private key on this machine (it never leaves it), sends a certificate request with the token to the hub, and writes <role>.key (mode 0600), <role>.crt (leaf then intermediate) and root.pem.

The hub's root is pinned by --ca-fingerprint, or else by the fingerprint inside the token: the root is fetched, checked against the pin, and from then on the hub's certificate and the issued chain are verified against it.`

type agentEnrollCmd struct{ enrollFlags }

func (c *agentEnrollCmd) Help() string { return enrollHelp }

func (c *agentEnrollCmd) Run(ctx context.Context, g *Globals) error {
	return c.enroll(ctx, g, pki.RoleAgent)
}

type relayEnrollCmd struct{ enrollFlags }

func (c *relayEnrollCmd) Help() string { return enrollHelp }

func (c *relayEnrollCmd) Run(ctx context.Context, g *Globals) error {
	return c.enroll(ctx, g, pki.RoleRelay)
}

// tokenGrant is the part of an enrollment token's JWT payload the client
// reads. It is read WITHOUT verifying the signature (the client cannot: the
// key is the CA's) and used only to pick the pin and to catch a token for
// the wrong role early; the hub verifies the token.
type tokenGrant struct {
	TrustDomain     string   `json:"td"`
	Workspace       string   `json:"ws"`
	Role            pki.Role `json:"role"`
	RootFingerprint string   `json:"root_sha256"`
}

func decodeTokenGrant(token string) (tokenGrant, error) {
	parts := strings.Split(strings.TrimSpace(token), ".")
	if len(parts) != 3 {
		return tokenGrant{}, errors.New("enrollment token is malformed: it should have three dot-separated parts; check it was copied whole")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return tokenGrant{}, errors.New("enrollment token is malformed: payload is not base64url")
	}
	var claims struct {
		NxMesh tokenGrant `json:"nxmesh"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return tokenGrant{}, errors.New("enrollment token is malformed: payload is not JSON")
	}
	return claims.NxMesh, nil
}

func (c *enrollFlags) enroll(ctx context.Context, g *Globals, role pki.Role) error {
	grant, err := decodeTokenGrant(c.Token)
	if err != nil {
		return err
	}
	if grant.Role != role {
		return fmt.Errorf("this is a %q token, not an %s token: create one with nxmesh token create --role %s", grant.Role, role, role)
	}
	pin := c.CAFingerprint
	if pin == "" {
		pin = grant.RootFingerprint
	}
	if pin == "" {
		return errors.New("no CA fingerprint: the token carries none, so pass --ca-fingerprint")
	}
	root, err := fetchPinnedRoot(ctx, c.Hub, pin)
	if err != nil {
		return err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key)
	if err != nil {
		return err
	}
	api, err := newAPIClientFor(c.Hub, pki.EncodeCertsPEM(root), "")
	if err != nil {
		return err
	}
	var out struct {
		Certificate string `json:"certificate"`
		Root        string `json:"root"`
		Identity    string `json:"identity"`
	}
	if err := api.do(ctx, "POST", "/api/v1/enroll", map[string]string{"token": strings.TrimSpace(c.Token), "csr": string(csr)}, &out); err != nil {
		return err
	}
	chain, err := checkIssued(out.Certificate, out.Root, root, role, grant.TrustDomain)
	if err != nil {
		return err
	}
	if _, err := pki.NewCertificate(key, chain); err != nil {
		return fmt.Errorf("the hub's certificate is not for the key sent: %w", err)
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return err
	}
	files := pki.Files{Dir: c.StateDir, Role: role}
	if err := files.WriteKey(key); err != nil {
		return fmt.Errorf("write %s: %w", files.KeyPath(), err)
	}
	if err := files.WriteChain(chain, root); err != nil {
		return fmt.Errorf("write %s: %w", files.CertPath(), err)
	}
	fmt.Fprintf(g.stdout, "Enrolled as %s (certificate valid until %s)\n", out.Identity, chain[0].NotAfter.Local().Format(time.RFC3339))
	fmt.Fprintf(g.stderr, "wrote %s, %s and %s\n", files.KeyPath(), files.CertPath(), files.RootPath())
	return nil
}

// fetchPinnedRoot gets the hub's root certificate and accepts it only if
// its fingerprint is the pin. The fetch itself skips certificate
// verification because nothing is trusted yet; that is safe because the
// answer is public data checked against the pin, and every later request
// verifies the hub against this root, host name included.
func fetchPinnedRoot(ctx context.Context, hub, pin string) (*x509.Certificate, error) {
	api, err := newAPIClientFor(hub, nil, "")
	if err != nil {
		return nil, err
	}
	tr := api.http.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} // see above: the pin verifies
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", api.base.String()+"/api/v1/ca/root.pem", nil)
	if err != nil {
		return nil, err
	}
	resp, err := api.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reach the hub at %s: %w", api.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the hub's root CA: %s", resp.Status)
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil || len(certs) != 1 {
		return nil, fmt.Errorf("the hub's root CA is not one PEM certificate: %v", err)
	}
	if err := pki.CheckPin(certs[0], pin); err != nil {
		return nil, err
	}
	return certs[0], nil
}

// checkIssued verifies what the hub returned: the root is the pinned one,
// the chain leads to it, and the leaf names an identity of this role in the
// token's trust domain.
func checkIssued(chainPEM, rootPEM string, root *x509.Certificate, role pki.Role, td string) ([]*x509.Certificate, error) {
	roots, err := pki.ParseCertsPEM([]byte(rootPEM))
	if err != nil || len(roots) != 1 || !bytes.Equal(roots[0].Raw, root.Raw) {
		return nil, errors.New("the hub returned a root CA other than the pinned one")
	}
	chain, err := pki.ParseCertsPEM([]byte(chainPEM))
	if err != nil || len(chain) < 2 {
		return nil, fmt.Errorf("the hub returned no certificate chain: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("the issued certificate does not chain to the pinned root: %w", err)
	}
	id, err := pki.IdentityFromCert(chain[0])
	if err != nil {
		return nil, err
	}
	if id.Role != role || (td != "" && id.TrustDomain != td) {
		return nil, fmt.Errorf("the issued certificate names %s, not a %s in trust domain %s", id, role, td)
	}
	return chain, nil
}
