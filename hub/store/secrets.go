package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nxmesh/nxmesh/schema"
)

// sealedPrefix marks a secret field stored sealed; what follows is the
// unpadded base64url of the nonce and the AES-256-GCM ciphertext.
const sealedPrefix = "sealed:v1:"

// ErrSecretKey means a stored secret does not open with the store's
// secret key: the database was written by hubs given another key.
var ErrSecretKey = errors.New("a stored secret does not open with this hub's secret key: start the hub with the key the other hubs use (--secret-key-file or NXMESH_SECRET_KEY)")

// secrets seals the secret fields of resource specs (a Certificate's
// private key) for the database, under keys derived from the
// installation's secret key, so that a database dump or backup holds no
// private key in the clear.
//
// Sealing is deterministic: the nonce is an HMAC of the plaintext under a
// key of its own. The store compares stored forms to find unchanged
// resources, which a random nonce would make always differ; two equal
// keys seal alike, which the API's redacted form (a digest of the key)
// shows anyway. A nonce repeats only with its plaintext, so GCM's nonce
// rule holds.
type secrets struct {
	aead     cipher.AEAD
	nonceKey []byte
}

// newSecrets derives the sealing keys from the installation's 32-byte
// secret key. The CA seals its own keys under the secret key itself;
// these keys are derived apart from it, and from each other.
func newSecrets(key []byte) (*secrets, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("store: secret key must be 32 bytes, got %d", len(key))
	}
	b, err := aes.NewCipher(derive(key, "nxmesh resource secrets v1: encryption"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &secrets{aead: aead, nonceKey: derive(key, "nxmesh resource secrets v1: nonce")}, nil
}

func derive(key []byte, label string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// secretAAD binds a sealed value to the field it was sealed for.
const secretAAD = "Certificate spec.privateKey"

func (s *secrets) seal(plain string) string {
	m := hmac.New(sha256.New, s.nonceKey)
	m.Write([]byte(plain))
	nonce := m.Sum(nil)[:s.aead.NonceSize()]
	out := s.aead.Seal(nonce, nonce, []byte(plain), []byte(secretAAD))
	return sealedPrefix + base64.RawURLEncoding.EncodeToString(out)
}

// open returns the plaintext of a sealed value. A value without the
// prefix is returned as it is: rows written before secrets were sealed
// hold the key in the clear (until SealClearSecrets or the next write).
func (s *secrets) open(v string) (string, error) {
	enc, ok := strings.CutPrefix(v, sealedPrefix)
	if !ok {
		return v, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return "", fmt.Errorf("sealed secret is malformed")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, raw[:n], raw[n:], []byte(secretAAD))
	if err != nil {
		return "", ErrSecretKey
	}
	return string(plain), nil
}

// sealSpec returns spec with its secret fields sealed: a copy, when it
// has any; spec itself otherwise.
func (s *secrets) sealSpec(spec schema.Spec) schema.Spec {
	c, ok := spec.(*schema.CertificateSpec)
	if !ok || c.PrivateKey == "" {
		return spec
	}
	sealed := *c
	sealed.PrivateKey = s.seal(c.PrivateKey)
	return &sealed
}

// openSpec opens the secret fields of a spec read from the database, in
// place.
func (s *secrets) openSpec(spec schema.Spec) error {
	c, ok := spec.(*schema.CertificateSpec)
	if !ok {
		return nil
	}
	plain, err := s.open(c.PrivateKey)
	if err != nil {
		return fmt.Errorf("privateKey: %w", err)
	}
	c.PrivateKey = plain
	return nil
}

// SealClearSecrets seals the secret fields that hubs from before sealing
// stored in the clear, in the resources and in their history, and returns
// how many rows it sealed. Call it only once the secret key is known to be
// the installation's (the CA opened with it): sealed under another key,
// those private keys would be lost.
func (db *DB) SealClearSecrets(ctx context.Context) (int, error) {
	type clearRow struct {
		table, ws, name string
		revision        int64
		spec            string
	}
	var found []clearRow
	err := db.tx(ctx, true, func(q querier) error {
		found = found[:0]
		for _, table := range []string{"resources", "resource_history"} {
			rev := "0"
			if table == "resource_history" {
				rev = "revision"
			}
			// Only rows with no sealed value are read: once sealed, a start
			// decodes nothing (no certificate PEM holds the prefix).
			rs, err := q.query(ctx, "SELECT workspace, name, "+rev+", spec FROM "+table+
				" WHERE kind = $1 AND CAST(spec AS TEXT) NOT LIKE $2", string(schema.KindCertificate), "%"+sealedPrefix+"%")
			if err != nil {
				return err
			}
			for rs.Next() {
				var r clearRow
				var spec []byte
				if err := rs.Scan(&r.ws, &r.name, &r.revision, &spec); err != nil {
					rs.Close()
					return err
				}
				s, err := schema.DecodeSpec(schema.KindCertificate, spec)
				if err != nil {
					rs.Close()
					return fmt.Errorf("stored Certificate %q: spec: %w", r.name, err)
				}
				c := s.(*schema.CertificateSpec)
				if c.PrivateKey == "" || strings.HasPrefix(c.PrivateKey, sealedPrefix) {
					continue
				}
				sealed, err := json.Marshal(db.secrets.sealSpec(c))
				if err != nil {
					rs.Close()
					return err
				}
				r.table, r.spec = table, string(sealed)
				found = append(found, r)
			}
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
		}
		for _, r := range found {
			var err error
			if r.table == "resources" {
				_, err = q.exec(ctx, "UPDATE resources SET spec = $1 WHERE workspace = $2 AND kind = $3 AND name = $4",
					r.spec, r.ws, string(schema.KindCertificate), r.name)
			} else {
				_, err = q.exec(ctx, "UPDATE resource_history SET spec = $1 WHERE workspace = $2 AND kind = $3 AND name = $4 AND revision = $5",
					r.spec, r.ws, string(schema.KindCertificate), r.name, r.revision)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("seal stored secrets: %w", err)
	}
	return len(found), nil
}
