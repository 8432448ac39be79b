package nginx

import (
	"fmt"
	"testing"

	"github.com/nxmesh/nxmesh/schema"
)

// BenchmarkCompile1000 compiles 1,000 virtual hosts, each proxying to its
// own upstream (2,000 resources, three locations per host), and reports
// ms per compile.
func BenchmarkCompile1000(b *testing.B) {
	var set []schema.Resource
	for i := range 1000 {
		name := fmt.Sprintf("svc-%04d", i)
		set = append(set,
			schema.Resource{APIVersion: schema.APIVersion, Kind: schema.KindUpstream, Metadata: schema.Metadata{Name: name},
				Spec: &schema.UpstreamSpec{LoadBalancing: schema.LeastConn, Keepalive: 16, Servers: []schema.UpstreamServer{
					{Address: fmt.Sprintf("10.%d.%d.1:8080", i/256, i%256)}, {Address: fmt.Sprintf("10.%d.%d.2:8080", i/256, i%256), Weight: 2},
				}}},
			schema.Resource{APIVersion: schema.APIVersion, Kind: schema.KindVirtualHost, Metadata: schema.Metadata{Name: name},
				Spec: &schema.VirtualHostSpec{
					ServerNames: []string{name + ".example.com"},
					Headers:     &schema.Headers{Response: &schema.HeaderRules{Add: map[string]string{"X-Frame-Options": "DENY"}}},
					Locations: []schema.Location{
						{Path: "/", Upstream: name, Headers: &schema.Headers{Request: &schema.HeaderRules{Add: map[string]string{"X-Request-Id": "$request_id"}}}},
						{Path: "/ws", Match: schema.MatchExact, Upstream: name, WebSocket: true},
						{Path: "/healthz", Match: schema.MatchExact, Return: &schema.Return{Status: 200, Body: "ok\n"}},
					},
				}},
		)
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if _, err := Compile(set, Options{}); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(n), "ms/op")
}
