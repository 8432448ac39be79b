package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// Files names the key, certificate chain and root files of one role in a
// data directory: <role>.key (0600), <role>.crt (leaf then intermediate) and
// root.pem.
type Files struct {
	Dir  string
	Role Role
}

// KeyPath is the private key file, PKCS#8 PEM, mode 0600.
func (f Files) KeyPath() string { return filepath.Join(f.Dir, string(f.Role)+".key") }

// CertPath is the certificate chain file: leaf then intermediate.
func (f Files) CertPath() string { return filepath.Join(f.Dir, string(f.Role)+".crt") }

// RootPath is the trust domain's root certificate.
func (f Files) RootPath() string { return filepath.Join(f.Dir, "root.pem") }

// ErrKeyPermissions means a private key file is readable or writable by
// group or others; daemons refuse to start on it.
var ErrKeyPermissions = errors.New("private key file is accessible by group or others")

// WriteKey writes the private key with mode 0600, atomically.
func (f Files) WriteKey(key crypto.Signer) error {
	pemKey, err := MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	return writeAtomic(f.KeyPath(), pemKey, 0o600)
}

// WriteChain writes the certificate chain (leaf then intermediate) and the
// root, each atomically, mode 0644.
func (f Files) WriteChain(chain []*x509.Certificate, root *x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("write certificate chain: empty chain")
	}
	if err := writeAtomic(f.CertPath(), EncodeCertsPEM(chain...), 0o644); err != nil {
		return err
	}
	if root != nil {
		return writeAtomic(f.RootPath(), EncodeCertsPEM(root), 0o644)
	}
	return nil
}

// WriteRenewed writes the chain of a renewed certificate (the key does not
// change on renewal), for use as Renewer.OnRenew so that the next start
// loads the new certificate.
func (f Files) WriteRenewed(c tls.Certificate) error {
	chain := make([]*x509.Certificate, 0, len(c.Certificate))
	for _, der := range c.Certificate {
		crt, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("write renewed certificate: %w", err)
		}
		chain = append(chain, crt)
	}
	return f.WriteChain(chain, nil)
}

// LoadKeyPair reads the key and chain into a tls.Certificate with Leaf set.
// It refuses a key file that group or others can access, and a chain whose
// leaf does not match the key.
func (f Files) LoadKeyPair() (tls.Certificate, error) {
	path := f.KeyPath()
	st, err := os.Stat(path)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, fmt.Errorf("load key %s: %w (mode %04o); run chmod 600 %s",
			path, ErrKeyPermissions, st.Mode().Perm(), path)
	}
	keyPEM, err := os.ReadFile(path)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key %s: %w", path, err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key %s: %w", path, err)
	}
	chainPEM, err := os.ReadFile(f.CertPath())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s: %w", f.CertPath(), err)
	}
	chain, err := ParseCertsPEM(chainPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s: %w", f.CertPath(), err)
	}
	cert, err := NewCertificate(key, chain)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load %s: %w", f.CertPath(), err)
	}
	return cert, nil
}

// LoadRoot reads root.pem and, when pin is not empty, checks its fingerprint.
func (f Files) LoadRoot(pin string) (*x509.Certificate, error) {
	data, err := os.ReadFile(f.RootPath())
	if err != nil {
		return nil, fmt.Errorf("load root %s: %w", f.RootPath(), err)
	}
	certs, err := ParseCertsPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load root %s: %w", f.RootPath(), err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("load root %s: want one certificate, found %d", f.RootPath(), len(certs))
	}
	if pin != "" {
		if err := CheckPin(certs[0], pin); err != nil {
			return nil, fmt.Errorf("load root %s: %w", f.RootPath(), err)
		}
	}
	return certs[0], nil
}

// NewCertificate pairs a private key with its chain (leaf first) after
// checking that the leaf certifies that key.
func NewCertificate(key crypto.Signer, chain []*x509.Certificate) (tls.Certificate, error) {
	if len(chain) == 0 || slices.Contains(chain, nil) {
		return tls.Certificate{}, errors.New("certificate chain is empty or holds a nil certificate")
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return tls.Certificate{}, errors.New("certificate does not match the private key")
	}
	c := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c, nil
}

// writeAtomic writes data to a temporary file in the same directory with
// perm, syncs it and renames it over path, so readers never see half a file.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
