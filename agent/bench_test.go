package agent_test

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkApply measures an apply end to end (stage, nginx -t, switch,
// reload, verify) against a real managed nginx, each iteration a new
// generation of n vhosts.
func BenchmarkApply(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprintf("vhosts=%d", n), func(b *testing.B) {
			e := newEnv(b, nil)
			mustApply(b, e.applier, bundle(b, e.ports, 0, n))
			var stage, test, verify time.Duration
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				bd := bundle(b, e.ports, i+1, n)
				b.StartTimer()
				res := mustApply(b, e.applier, bd)
				stage += res.Durations.Stage
				test += res.Durations.Test
				verify += res.Durations.Reload + res.Durations.Verify
			}
			ms := func(d time.Duration) float64 { return float64(d) / float64(b.N) / 1e6 }
			b.ReportMetric(ms(stage), "stage-ms/apply")
			b.ReportMetric(ms(test), "test-ms/apply")
			b.ReportMetric(ms(verify), "reload+verify-ms/apply")
		})
	}
}
