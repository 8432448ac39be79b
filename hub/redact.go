package hub

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/nxmesh/nxmesh/schema"
)

// redactSpec returns spec with secrets replaced by a short digest, for
// every answer the API gives: a Certificate's private key is write-only.
// The digest lets a diff show that a key changed without showing the key.
func redactSpec(spec schema.Spec) schema.Spec {
	c, ok := spec.(*schema.CertificateSpec)
	if !ok || c.PrivateKey == "" {
		return spec
	}
	sum := sha256.Sum256([]byte(c.PrivateKey))
	out := *c
	out.PrivateKey = schema.RedactedKeyPrefix + hex.EncodeToString(sum[:8])
	return &out
}

// redactDoc is redactSpec on a copy of a document; nil stays nil.
func redactDoc(doc *schema.Resource) *schema.Resource {
	if doc == nil {
		return nil
	}
	out := *doc
	out.Spec = redactSpec(doc.Spec)
	return &out
}
