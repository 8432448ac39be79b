package hub

import (
	"strings"
	"testing"
)

// TestMetrics: /metrics needs a token and counts the store's write
// transactions, which a write moves.
func TestMetrics(t *testing.T) {
	_, c := loggedIn(t)
	value := func() string {
		a := c.raw("GET", "/metrics", "", nil)
		if a.status != 200 {
			t.Fatalf("GET /metrics: %d %s", a.status, a.body)
		}
		for _, l := range strings.Split(string(a.body), "\n") {
			if v, ok := strings.CutPrefix(l, "nxmesh_store_write_transactions_total "); ok {
				return v
			}
		}
		t.Fatalf("no write counter in:\n%s", a.body)
		return ""
	}
	before := value()
	c.ok("POST", "/api/v1/organizations", "application/json", []byte(`{"name":"acme"}`), 201, nil)
	if after := value(); after == before {
		t.Errorf("write counter stayed at %s after a write", after)
	}
}
