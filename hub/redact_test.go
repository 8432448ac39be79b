package hub

import (
	"bytes"
	"os"
	"testing"

	"github.com/nxmesh/nxmesh/schema"
)

// TestPrivateKeysNeverAnswered: a Certificate's private key goes in but
// never comes out of the API: not in a get, a list, a revision, a dry-run
// diff or a revision diff. A digest stands in its place.
func TestPrivateKeysNeverAnswered(t *testing.T) {
	_, c := loggedIn(t)
	data, err := os.ReadFile("../schema/testdata/examples/shop.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs, err := schema.Decode("shop.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	var key string
	for _, d := range docs {
		if spec, ok := d.Spec.(*schema.CertificateSpec); ok {
			key = spec.PrivateKey
		}
	}
	if key == "" {
		t.Fatal("example has no private key")
	}
	secret := []byte("PRIVATE KEY")
	dry := c.raw("POST", "/api/v1/workspaces/default/apply?dryRun=true", "application/yaml", data)
	c.ok("POST", "/api/v1/workspaces/default/apply", "application/yaml", data, 200, nil)
	for name, a := range map[string]answer{
		"dry run":  dry,
		"get":      c.raw("GET", "/api/v1/workspaces/default/resources/certificates/shop-tls", "", nil),
		"list":     c.raw("GET", "/api/v1/workspaces/default/resources/certificates", "", nil),
		"revision": c.raw("GET", "/api/v1/workspaces/default/revisions/1", "", nil),
		"diff":     c.raw("GET", "/api/v1/workspaces/default/revisions/1/diff?from=0", "", nil),
	} {
		if a.status != 200 {
			t.Fatalf("%s: %d %s", name, a.status, a.body)
		}
		if bytes.Contains(a.body, secret) {
			t.Errorf("%s answers the private key:\n%s", name, a.body)
		}
		if !bytes.Contains(a.body, []byte(schema.RedactedKeyPrefix)) {
			t.Errorf("%s shows no key digest:\n%s", name, a.body)
		}
	}
}
