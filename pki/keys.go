package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// GenerateKey returns a new ECDSA P-256 private key. Keys are generated where
// they are used and never leave that process.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// NewCSR returns a PEM certificate request carrying only key's public key and
// a proof of possession. The CA decides the identity, so the request asks for
// no names.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MarshalKeyPEM encodes a private key as PKCS#8 PEM.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM decodes a PKCS#8 or SEC 1 PEM private key. Errors never quote
// the key material.
func ParseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("parse private key: no PEM block found")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("parse private key: unexpected PEM block type %q", block.Type)
	}
	if err != nil {
		return nil, errors.New("parse private key: malformed key")
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("parse private key: unsupported key type %T", key)
	}
	return s, nil
}

// EncodeCertsPEM encodes certificates as concatenated PEM blocks, in order.
func EncodeCertsPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// ParseCertsPEM decodes every CERTIFICATE block in data, in order. It fails
// on any other block type and on input with no certificate.
func ParseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("parse certificates: unexpected PEM block type %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificates: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("parse certificates: no PEM certificate found")
	}
	return certs, nil
}

// Fingerprint returns the lower-case hex SHA-256 of a certificate's DER, the
// form enrollment tokens and `--root-fingerprint` flags carry.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// ErrPinMismatch means a root certificate is not the one that was pinned.
var ErrPinMismatch = errors.New("root fingerprint does not match the pinned fingerprint")

// CheckPin compares root's fingerprint with want (hex, any case, colons
// allowed) in constant time.
func CheckPin(root *x509.Certificate, want string) error {
	w := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(want), ":", ""))
	got := Fingerprint(root)
	if len(w) != len(got) || subtle.ConstantTimeCompare([]byte(w), []byte(got)) != 1 {
		return fmt.Errorf("%w: hub root is %s, pinned %s; check the fingerprint or the hub address", ErrPinMismatch, got, w)
	}
	return nil
}
