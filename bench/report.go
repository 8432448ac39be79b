package bench

import (
	"math"
	"slices"
	"time"
)

// latencyBounds are the histogram's upper bounds in milliseconds, log-spaced
// so that one chart reads both a loopback push (a few ms) and a stalled one
// (seconds). The last bound, -1, is +Inf.
var latencyBounds = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, -1}

// NewLatency summarizes samples: nearest-rank percentiles (a reported p99 is
// a latency some agent really saw, not an interpolation) and a histogram over
// fixed bounds, so that rounds and runs can be added and compared bucket by
// bucket.
func NewLatency(samples []time.Duration) Latency {
	ms := make([]float64, len(samples))
	for i, d := range samples {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	slices.Sort(ms)
	l := Latency{
		Count:        len(ms),
		BucketBounds: slices.Clone(latencyBounds),
		Buckets:      make([]int, len(latencyBounds)),
	}
	if len(ms) == 0 {
		return l
	}
	l.P50 = nearestRank(ms, 50)
	l.P90 = nearestRank(ms, 90)
	l.P99 = nearestRank(ms, 99)
	l.Max = ms[len(ms)-1]
	for _, v := range ms {
		l.Buckets[bucketOf(l.BucketBounds, v)]++
	}
	return l
}

// nearestRank is the p-th percentile of sorted (not empty): the smallest
// sample with at least p percent of the samples at or below it.
func nearestRank(sorted []float64, p float64) float64 {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(rank, 1)
	return sorted[rank-1]
}

// bucketOf is the index of the first bound v fits under; -1 is +Inf.
func bucketOf(bounds []float64, v float64) int {
	for i, b := range bounds {
		if b < 0 || v <= b {
			return i
		}
	}
	return len(bounds) - 1
}
