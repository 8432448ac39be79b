package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/nxmesh/nxmesh/schema"
)

// shop is the example shop, among its resources a Certificate with its
// private key, applied to a fresh store's default workspace.
type shop struct {
	db   *DB
	ws   string
	docs []schema.Resource
	cert *schema.CertificateSpec // as given
}

func applyShop(t *testing.T, url string) shop {
	t.Helper()
	data, err := os.ReadFile("../../schema/testdata/examples/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := shop{db: openDB(t, url, nil)}
	if s.docs, err = schema.Decode("shop.yaml", data); err != nil {
		t.Fatal(err)
	}
	for _, d := range s.docs {
		if c, ok := d.Spec.(*schema.CertificateSpec); ok {
			s.cert = c
		}
	}
	if s.cert == nil || !strings.Contains(s.cert.PrivateKey, "PRIVATE KEY") {
		t.Fatal("the example has no private key")
	}
	ws, err := s.db.EnsureDefault(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s.ws = ws.Name
	if _, err := s.db.Apply(context.Background(), s.ws, s.docs, alice); err != nil {
		t.Fatal(err)
	}
	return s
}

// deleteCertificate deletes shop-tls, and first the VirtualHost that
// names it.
func (s shop) deleteCertificate(t *testing.T) {
	t.Helper()
	for _, r := range []struct {
		kind schema.Kind
		name string
	}{{schema.KindVirtualHost, "shop"}, {schema.KindCertificate, "shop-tls"}} {
		if _, err := s.db.DeleteResource(context.Background(), s.ws, r.kind, r.name, 0, alice); err != nil {
			t.Fatal(err)
		}
	}
}

// storedSpecs are every stored form of the shop-tls spec: the current row
// and its history.
func storedSpecs(t *testing.T, db *DB, ws string) []string {
	t.Helper()
	var out []string
	err := db.tx(context.Background(), false, func(q querier) error {
		out = nil
		for _, query := range []string{
			"SELECT spec FROM resources WHERE workspace = $1 AND name = 'shop-tls'",
			"SELECT spec FROM resource_history WHERE workspace = $1 AND name = 'shop-tls'",
		} {
			rs, err := q.query(context.Background(), query, ws)
			if err != nil {
				return err
			}
			for rs.Next() {
				var spec []byte
				if err := rs.Scan(&spec); err != nil {
					rs.Close()
					return err
				}
				out = append(out, string(spec))
			}
			rs.Close()
			if err := rs.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestCertificateKeySealedAtRest: a Certificate's private key is stored
// sealed, in the resource and in its history, and reads back as given. A
// re-apply of the same key is no change; a store given another secret
// key cannot read it back, and says so.
func TestCertificateKeySealedAtRest(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := applyShop(t, url)
		db, ws, key := s.db, s.ws, s.cert.PrivateKey

		specs := storedSpecs(t, db, ws)
		if len(specs) != 2 {
			t.Fatalf("%d stored forms of shop-tls, want the resource and one history row", len(specs))
		}
		for _, spec := range specs {
			if strings.Contains(spec, "PRIVATE KEY") || !strings.Contains(spec, sealedPrefix) {
				t.Errorf("stored spec holds the key in the clear, or unsealed:\n%s", spec)
			}
		}

		r, err := db.GetResource(ctx, ws, schema.KindCertificate, "shop-tls")
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Doc.Spec.(*schema.CertificateSpec).PrivateKey; got != key {
			t.Errorf("key read back differs:\n%s", got)
		}
		at, err := db.RevisionResources(ctx, ws, 1)
		if err != nil {
			t.Fatal(err)
		}
		certs := 0
		for _, r := range at {
			if c, ok := r.Doc.Spec.(*schema.CertificateSpec); ok {
				certs++
				if c.PrivateKey != key {
					t.Errorf("key read back from history differs:\n%s", c.PrivateKey)
				}
			}
		}
		if certs != 1 {
			t.Errorf("revision 1 holds %d Certificates, want 1", certs)
		}

		res, err := db.Apply(ctx, ws, s.docs, alice)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range res.Resources {
			if a.Op != Unchanged {
				t.Errorf("re-apply of the same documents: %s %s %s", a.Kind, a.Name, a.Op)
			}
		}

		other, err := Open(ctx, Config{URL: url, Logger: slog.New(slog.DiscardHandler), SecretKey: bytes.Repeat([]byte{8}, 32)})
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.GetResource(ctx, ws, schema.KindCertificate, "shop-tls"); !errors.Is(err, ErrSecretKey) {
			t.Errorf("read with another secret key: %v, want ErrSecretKey", err)
		}
	})
}

// TestCertificateKeySurvivesRollback: a rollback to a revision whose
// Certificate was deleted restores it, sealed, with its key.
func TestCertificateKeySurvivesRollback(t *testing.T) {
	ctx := context.Background()
	s := applyShop(t, t.TempDir()+"/nxmesh.db")
	s.deleteCertificate(t)
	if _, err := s.db.Rollback(ctx, s.ws, 1, alice); err != nil {
		t.Fatal(err)
	}
	r, err := s.db.GetResource(ctx, s.ws, schema.KindCertificate, "shop-tls")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Doc.Spec.(*schema.CertificateSpec).PrivateKey; got != s.cert.PrivateKey {
		t.Errorf("key after rollback:\n%s", got)
	}
	for _, spec := range storedSpecs(t, s.db, s.ws) {
		if strings.Contains(spec, "PRIVATE KEY") {
			t.Errorf("a stored spec holds the key in the clear after rollback:\n%s", spec)
		}
	}
}

// TestCertificateKeyStoredInTheClear: rows written before keys were
// sealed hold them in the clear. They read back, and SealClearSecrets
// seals them, in the resource and its history, once.
func TestCertificateKeyStoredInTheClear(t *testing.T) {
	eachBackend(t, func(t *testing.T, url string) {
		ctx := context.Background()
		s := applyShop(t, url)
		db, ws, key, cert := s.db, s.ws, s.cert.PrivateKey, s.cert
		// The rows as an older hub wrote them: the spec's plain JSON.
		clear := `{"certificate":` + jsonString(t, cert.Certificate) + `,"privateKey":` + jsonString(t, key) + `}`
		err := db.tx(ctx, true, func(q querier) error {
			for _, table := range []string{"resources", "resource_history"} {
				if _, err := q.exec(ctx, "UPDATE "+table+" SET spec = $1 WHERE workspace = $2 AND name = 'shop-tls'", clear, ws); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		readBack := func(when string) {
			t.Helper()
			r, err := db.GetResource(ctx, ws, schema.KindCertificate, "shop-tls")
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Doc.Spec.(*schema.CertificateSpec).PrivateKey; got != key {
				t.Fatalf("%s: key reads back as:\n%s", when, got)
			}
		}
		readBack("stored in the clear")

		n, err := db.SealClearSecrets(ctx)
		if err != nil || n != 2 {
			t.Fatalf("SealClearSecrets sealed %d rows (%v); want the resource and its history row", n, err)
		}
		for _, spec := range storedSpecs(t, db, ws) {
			if strings.Contains(spec, "PRIVATE KEY") || !strings.Contains(spec, sealedPrefix) {
				t.Errorf("after SealClearSecrets, a stored spec holds the key in the clear:\n%s", spec)
			}
		}
		readBack("sealed")
		if n, err := db.SealClearSecrets(ctx); err != nil || n != 0 {
			t.Errorf("second SealClearSecrets sealed %d rows (%v); want none", n, err)
		}
		res, err := db.Apply(ctx, ws, s.docs, alice)
		if err != nil || res.Changed {
			t.Errorf("re-apply after sealing changed something (%v): %+v", err, res.Resources)
		}
		// A deleted Certificate leaves a history row without a spec, which
		// a hub's start must pass over.
		s.deleteCertificate(t)
		if n, err := db.SealClearSecrets(ctx); err != nil || n != 0 {
			t.Errorf("SealClearSecrets after a Certificate was deleted: %d rows, %v; want none", n, err)
		}
	})
}

func jsonString(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSecretsOpenRefuses: a sealed value that was altered, or that is not
// base64, does not open; nothing else does either.
func TestSecretsOpenRefuses(t *testing.T) {
	s, err := newSecrets(testSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	sealed := s.seal("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
	if again := s.seal("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"); again != sealed {
		t.Errorf("sealing is not deterministic: %s, then %s", sealed, again)
	}
	if other := s.seal("another key"); other[:len(sealedPrefix)+16] == sealed[:len(sealedPrefix)+16] {
		t.Errorf("two keys sealed with the same nonce: %s, %s", sealed, other)
	}
	flipped := []byte(sealed)
	flipped[len(flipped)-3] ^= 'A' ^ 'B'
	if flipped[len(flipped)-3] == sealed[len(sealed)-3] {
		flipped[len(flipped)-3] = 'C'
	}
	for name, v := range map[string]string{
		"altered":    string(flipped),
		"not base64": sealedPrefix + "!!!",
		"too short":  sealedPrefix + "AAAA",
	} {
		if got, err := s.open(v); err == nil {
			t.Errorf("%s: opened as %q", name, got)
		}
	}
	if _, err := newSecrets(make([]byte, 16)); err == nil {
		t.Error("a 16-byte secret key was taken")
	}
}

// FuzzSecretsOpen checks that open never panics on what a database column
// could hold, passes a value without the sealed prefix through unchanged,
// and opens whatever seal made back to its plaintext.
func FuzzSecretsOpen(f *testing.F) {
	s, err := newSecrets(testSecretKey)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
	f.Add(sealedPrefix)
	f.Add(sealedPrefix + "AAAA")
	f.Add(sealedPrefix + "!!!")
	f.Add(s.seal("a key"))
	f.Fuzz(func(t *testing.T, v string) {
		if got, err := s.open(s.seal(v)); err != nil || got != v {
			t.Fatalf("sealed %q opens as %q, %v", v, got, err)
		}
		got, err := s.open(v)
		if !strings.HasPrefix(v, sealedPrefix) && (err != nil || got != v) {
			t.Fatalf("unsealed %q opens as %q, %v", v, got, err)
		}
	})
}
