package ca

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// ErrWrongKey means the key-encryption key does not open the CA material in
// the store. Nothing was changed; start the hub with the key the other hubs
// use (--secret-key-file or NXMESH_SECRET_KEY).
var ErrWrongKey = errors.New("secret key does not match the CA stored in the database: use the key the other hubs were started with (--secret-key-file or NXMESH_SECRET_KEY)")

// kekID is a check value for a key-encryption key: an HMAC under the key of a
// fixed label. It identifies the key without revealing it, so a wrong key is
// refused before any decryption is attempted.
func kekID(kek []byte) string {
	m := hmac.New(sha256.New, kek)
	m.Write([]byte("nxmesh ca kek id v1"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// seal encrypts plaintext with AES-256-GCM under kek; aad binds the
// ciphertext to its purpose (e.g. "root-key") and trust domain.
func seal(kek, plaintext []byte, aad string) ([]byte, error) {
	g, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return g.Seal(nonce, nonce, plaintext, []byte(aad)), nil
}

// open reverses seal.
func open(kek, sealed []byte, aad string) ([]byte, error) {
	g, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize() {
		return nil, fmt.Errorf("open %s: ciphertext too short", aad)
	}
	pt, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], []byte(aad))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", aad, ErrWrongKey)
	}
	return pt, nil
}

func newGCM(kek []byte) (cipher.AEAD, error) {
	if len(kek) != 32 {
		return nil, fmt.Errorf("secret key must be 32 bytes, got %d", len(kek))
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
