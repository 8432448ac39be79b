// Package ca is the certificate authority embedded in the hub: the root and
// intermediate of one trust domain (kept encrypted in the hub store), the
// step-ca authority that signs with them, enrollment tokens, issuance,
// renewal and revocation.
//
// pki/ca is linked only by the hub. Agents and relays use package pki and
// must never import this package: it pulls in step-ca's authority.
package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"go.step.sm/crypto/jose"

	"github.com/nxmesh/nxmesh/pki"
)

// provisionerName is the step-ca JWK provisioner that accepts enrollment
// tokens; it is the tokens' issuer.
const provisionerName = "nxmesh-enroll"

// Config configures Open.
type Config struct {
	// TrustDomain of the installation, e.g. "mesh.example.com".
	TrustDomain string
	// Storage is the shared hub store.
	Storage Storage
	// KEK is the 32-byte key-encryption key the CA keys are sealed with.
	KEK []byte
	// Clock is the time source (default time.Now).
	Clock func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// CertLifetime of agent, relay and hub certificates (default 24h).
	CertLifetime time.Duration
	// Backdate of NotBefore against clock skew (default 1m; negative
	// means none).
	Backdate time.Duration
	// RootLifetime (default 10 years) and IntermediateLifetime (default 5
	// years) apply when the CA is created.
	RootLifetime, IntermediateLifetime time.Duration
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.CertLifetime == 0 {
		c.CertLifetime = 24 * time.Hour
	}
	if c.Backdate == 0 {
		c.Backdate = time.Minute
	} else if c.Backdate < 0 {
		c.Backdate = 0
	}
	if c.RootLifetime == 0 {
		c.RootLifetime = 10 * 365 * 24 * time.Hour
	}
	if c.IntermediateLifetime == 0 {
		c.IntermediateLifetime = 5 * 365 * 24 * time.Hour
	}
}

// Validate reports the first invalid field.
func (c *Config) Validate() error {
	if err := pki.ValidateTrustDomain(c.TrustDomain); err != nil {
		return fmt.Errorf("ca config: %w", err)
	}
	if c.Storage == nil {
		return errors.New("ca config: no storage")
	}
	if len(c.KEK) != 32 {
		return fmt.Errorf("ca config: secret key must be 32 bytes, got %d", len(c.KEK))
	}
	if c.CertLifetime < 0 || c.CertLifetime > 0 && c.CertLifetime < time.Second {
		return fmt.Errorf("ca config: certificate lifetime %s is below one second", c.CertLifetime)
	}
	return nil
}

// CA is the hub's certificate authority. It is safe for concurrent use; any
// number of hubs may open the same Storage.
type CA struct {
	cfg          Config
	auth         *authority.Authority
	root         *x509.Certificate
	intermediate *x509.Certificate
	signer       jose.Signer // enrollment token signer
	provKey      *ecdsa.PrivateKey
	kid          string
	audience     string
	fingerprint  string
}

// material is the CA as stored: certificates in clear, keys sealed under the
// KEK, and the KEK's check value.
type material struct {
	Version        int    `json:"v"`
	TrustDomain    string `json:"trust_domain"`
	KEKID          string `json:"kek_id"`
	Root           []byte `json:"root"`         // DER
	Intermediate   []byte `json:"intermediate"` // DER
	RootKey        []byte `json:"root_key"`     // sealed PKCS#8
	IntermediateKy []byte `json:"intermediate_key"`
	ProvisionerKey []byte `json:"provisioner_key"`
}

// Open loads the CA from Storage, creating it on first start. Two hubs
// opening an empty store at once end up with one CA: the loser of CreateCA
// re-reads the winner's. With the wrong KEK, Open returns an error wrapping
// ErrWrongKey and writes nothing.
func Open(ctx context.Context, cfg Config) (*CA, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	m, err := loadOrCreate(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	return build(&cfg, m)
}

func loadOrCreate(ctx context.Context, cfg *Config) (*material, error) {
	blob, err := cfg.Storage.GetCA(ctx)
	if errors.Is(err, ErrNotFound) {
		fresh, gerr := generate(cfg)
		if gerr != nil {
			return nil, gerr
		}
		enc, _ := json.Marshal(fresh)
		switch cerr := cfg.Storage.CreateCA(ctx, enc); {
		case cerr == nil:
			cfg.Logger.Info("created certificate authority", "trust_domain", cfg.TrustDomain,
				"root_fingerprint", pki.Fingerprint(mustParse(fresh.Root)))
			return fresh, nil
		case errors.Is(cerr, ErrExists):
			blob, err = cfg.Storage.GetCA(ctx) // another hub won; use its CA
		default:
			return nil, fmt.Errorf("store new certificate authority: %w", cerr)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("load certificate authority: %w", err)
	}
	var m material
	if err := json.Unmarshal(blob, &m); err != nil || m.Version != 1 {
		return nil, errors.New("load certificate authority: stored CA material is not version 1 JSON")
	}
	if m.TrustDomain != cfg.TrustDomain {
		return nil, fmt.Errorf("load certificate authority: the store holds trust domain %q, configured %q", m.TrustDomain, cfg.TrustDomain)
	}
	if m.KEKID != kekID(cfg.KEK) {
		return nil, fmt.Errorf("load certificate authority: %w", ErrWrongKey)
	}
	return &m, nil
}

func mustParse(der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err) // only called on certificates we just created
	}
	return c
}

// generate creates a root, an intermediate and the provisioner key, all
// ECDSA P-256, and seals the keys.
func generate(cfg *Config) (*material, error) {
	now := cfg.Clock()
	rootKey, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	intKey, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	provKey, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{Organization: []string{"NxMesh"}, CommonName: cfg.TrustDomain + " Root CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(cfg.RootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("create root certificate: %w", err)
	}
	root := mustParse(rootDER)
	intTmpl := &x509.Certificate{
		SerialNumber:          randSerial(),
		Subject:               pkix.Name{Organization: []string{"NxMesh"}, CommonName: cfg.TrustDomain + " Intermediate CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(cfg.IntermediateLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		// Name constraints: this intermediate can only vouch for identities
		// in our trust domain.
		PermittedURIDomains: []string{cfg.TrustDomain},
	}
	intDER, err := x509.CreateCertificate(rand.Reader, intTmpl, root, intKey.Public(), rootKey)
	if err != nil {
		return nil, fmt.Errorf("create intermediate certificate: %w", err)
	}
	m := &material{Version: 1, TrustDomain: cfg.TrustDomain, KEKID: kekID(cfg.KEK), Root: rootDER, Intermediate: intDER}
	for _, k := range []struct {
		key  *ecdsa.PrivateKey
		dst  *[]byte
		name string
	}{{rootKey, &m.RootKey, "root-key"}, {intKey, &m.IntermediateKy, "intermediate-key"}, {provKey, &m.ProvisionerKey, "provisioner-key"}} {
		der, err := x509.MarshalPKCS8PrivateKey(k.key)
		if err != nil {
			return nil, err
		}
		if *k.dst, err = seal(cfg.KEK, der, k.name+"/"+cfg.TrustDomain); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func randSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return n
}

func openKey(cfg *Config, sealed []byte, name string) (*ecdsa.PrivateKey, error) {
	der, err := open(cfg.KEK, sealed, name+"/"+cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("load certificate authority: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("load certificate authority: %s is malformed", name)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("load certificate authority: %s is not ECDSA", name)
	}
	return ek, nil
}

// build decrypts the material and starts the embedded step-ca authority.
func build(cfg *Config, m *material) (*CA, error) {
	root, err := x509.ParseCertificate(m.Root)
	if err != nil {
		return nil, fmt.Errorf("load certificate authority: root: %w", err)
	}
	inter, err := x509.ParseCertificate(m.Intermediate)
	if err != nil {
		return nil, fmt.Errorf("load certificate authority: intermediate: %w", err)
	}
	intKey, err := openKey(cfg, m.IntermediateKy, "intermediate-key")
	if err != nil {
		return nil, err
	}
	provKey, err := openKey(cfg, m.ProvisionerKey, "provisioner-key")
	if err != nil {
		return nil, err
	}
	if !intKey.PublicKey.Equal(inter.PublicKey) {
		return nil, errors.New("load certificate authority: intermediate key does not match its certificate")
	}

	pub := jose.JSONWebKey{Key: provKey.Public(), Algorithm: string(jose.ES256), Use: "sig"}
	kid, err := jose.Thumbprint(&pub)
	if err != nil {
		return nil, err
	}
	pub.KeyID = kid
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: provKey, KeyID: kid, Algorithm: string(jose.ES256)}},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return nil, fmt.Errorf("token signer: %w", err)
	}

	minDur := min(cfg.CertLifetime, 5*time.Minute)
	no := false
	prov := &provisioner.JWK{
		Type: "JWK",
		Name: provisionerName,
		Key:  &pub,
		Claims: &provisioner.Claims{
			MinTLSDur:               &provisioner.Duration{Duration: minDur},
			MaxTLSDur:               &provisioner.Duration{Duration: cfg.CertLifetime},
			DefaultTLSDur:           &provisioner.Duration{Duration: cfg.CertLifetime},
			DisableRenewal:          &no,
			AllowRenewalAfterExpiry: &no,
		},
	}
	acfg := &config.Config{
		// DNSNames produce the provisioner audiences: https://<td>/1.0/sign.
		DNSNames: []string{cfg.TrustDomain},
		AuthorityConfig: &config.AuthConfig{
			Provisioners: provisioner.List{prov},
			// Tokens minted before this process started (by another hub,
			// or by this one before a restart) must still redeem; expiry
			// and single use are what bound them.
			DisableIssuedAtCheck: true,
			Backdate:             &provisioner.Duration{Duration: cfg.Backdate},
		},
	}
	auth, err := authority.NewEmbedded(
		authority.WithConfig(acfg),
		authority.WithX509RootCerts(root),
		authority.WithX509Signer(inter, intKey),
		authority.WithDatabase(&authDB{s: cfg.Storage, clock: cfg.Clock}),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("start embedded step-ca: %w", err)
	}
	return &CA{
		cfg:          *cfg,
		auth:         auth,
		root:         root,
		intermediate: inter,
		signer:       signer,
		provKey:      provKey,
		kid:          kid,
		audience:     "https://" + cfg.TrustDomain + "/1.0/sign",
		fingerprint:  pki.Fingerprint(root),
	}, nil
}

// Root returns the trust domain's root certificate.
func (c *CA) Root() *x509.Certificate { return c.root }

// Intermediate returns the issuing certificate.
func (c *CA) Intermediate() *x509.Certificate { return c.intermediate }

// RootPEM returns the root certificate as PEM, for root.pem.
func (c *CA) RootPEM() []byte { return pki.EncodeCertsPEM(c.root) }

// Fingerprint returns the root's SHA-256 fingerprint (hex of the DER).
func (c *CA) Fingerprint() string { return c.fingerprint }

// TrustDomain returns the trust domain this CA issues for.
func (c *CA) TrustDomain() string { return c.cfg.TrustDomain }

// Roots returns a pool holding the root, for pki.Peer.
func (c *CA) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.root)
	return p
}
