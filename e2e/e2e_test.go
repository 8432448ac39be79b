package e2e_test

import (
	"testing"
	"time"
)

// TestServedThroughRelay: a vhost applied through the API is served by the
// agent's nginx, proxying to a real upstream, within 2 s of the API
// answering, through a relay running as a separate process.
func TestServedThroughRelay(t *testing.T) {
	h := startHub(t, "")
	r := startRelay(t, h)
	a := enrollAgent(t, h, map[string]string{"env": "test"})
	a.run(r.url())
	up := upstream(t, "hello from upstream")
	port := testenvPort(t)

	res := h.applyStore(site(port, up, "v1"))
	answered := time.Now()
	served := waitServed(t, port, "v1", 10*time.Second)
	if d := served.Sub(answered); d > 2*time.Second {
		t.Errorf("served %v after the API answered; want at most 2 s", d)
	} else {
		t.Logf("served %v after the API answered", d.Round(time.Millisecond))
	}
	body, _, err := fetch(port)
	if err != nil || body != "hello from upstream" {
		t.Fatalf("GET through nginx = %q, %v; want the upstream's answer", body, err)
	}
	c := h.waitConverged(res.Revision, 5*time.Second)
	if c.Counts.Applied != 1 || c.Total != 1 || c.ByRelay[relayID(t, r)].Applied != 1 || c.ByLabel["env=test"].Applied != 1 {
		t.Errorf("convergence = %+v; want the agent applied, counted under its relay and label", c)
	}
	waitFor(t, 5*time.Second, "the relay is listed with its one agent", func() bool {
		var relays struct {
			Items []struct {
				ID     string
				Agents int
			}
		}
		h.mustDo("GET", "/api/v1/relays", nil, &relays)
		for _, rl := range relays.Items {
			if rl.ID == relayID(t, r) {
				return rl.Agents == 1
			}
		}
		return false
	})
}
