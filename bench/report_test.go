package bench

import (
	"testing"
	"time"
)

func TestReportLatency(t *testing.T) {
	tests := []struct {
		name               string
		samples            []time.Duration
		p50, p90, p99, max float64
	}{
		{name: "empty"},
		{name: "one", samples: ms(7), p50: 7, p90: 7, p99: 7, max: 7},
		{name: "ten", samples: ms(10, 1, 9, 2, 8, 3, 7, 4, 6, 5), p50: 5, p90: 9, p99: 10, max: 10},
		{name: "hundred", samples: msRange(1, 100), p50: 50, p90: 90, p99: 99, max: 100},
		{name: "two hundred", samples: msRange(1, 200), p50: 100, p90: 180, p99: 198, max: 200},
		{name: "beyond the last bound", samples: ms(0.5, 15000, 20000), p50: 15000, p90: 20000, p99: 20000, max: 20000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLatency(tc.samples)
			if l.Count != len(tc.samples) {
				t.Errorf("Count = %d, want %d", l.Count, len(tc.samples))
			}
			got := []float64{l.P50, l.P90, l.P99, l.Max}
			want := []float64{tc.p50, tc.p90, tc.p99, tc.max}
			for i, name := range []string{"p50", "p90", "p99", "max"} {
				if got[i] != want[i] {
					t.Errorf("%s = %v, want %v", name, got[i], want[i])
				}
			}
			if len(l.Buckets) != len(l.BucketBounds) {
				t.Fatalf("%d buckets for %d bounds", len(l.Buckets), len(l.BucketBounds))
			}
			if l.BucketBounds[len(l.BucketBounds)-1] != -1 {
				t.Errorf("last bound = %v, want -1 (+Inf)", l.BucketBounds[len(l.BucketBounds)-1])
			}
			sum := 0
			for _, n := range l.Buckets {
				sum += n
			}
			if sum != l.Count {
				t.Errorf("buckets sum to %d, want Count %d", sum, l.Count)
			}
		})
	}
}

func TestReportLatencyBuckets(t *testing.T) {
	l := NewLatency(ms(0.5, 1, 1.5, 2, 3, 12000))
	want := map[float64]int{1: 2, 2: 2, 5: 1, -1: 1}
	for i, b := range l.BucketBounds {
		if l.Buckets[i] != want[b] {
			t.Errorf("bucket <= %v holds %d, want %d", b, l.Buckets[i], want[b])
		}
	}
}

// ms turns milliseconds into durations.
func ms(v ...float64) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x * float64(time.Millisecond))
	}
	return out
}

// msRange is from..to milliseconds, one apart, shuffled by reversal.
func msRange(from, to int) []time.Duration {
	var out []time.Duration
	for v := to; v >= from; v-- {
		out = append(out, time.Duration(v)*time.Millisecond)
	}
	return out
}
