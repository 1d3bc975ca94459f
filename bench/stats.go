// Package bench holds the pieces of berth's comparative benchmark that are
// worth testing on their own: percentiles and a small SVG line chart. The
// harness itself is bench/cmd/berth-bench.
package bench

import (
	"math"
	"slices"
)

// Percentile returns the p-th percentile (0 < p <= 1) of samples by the
// nearest-rank method, which never invents a value no run produced. It
// returns 0 for no samples and does not modify samples.
func Percentile(samples []float64, p float64) float64 {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	rank := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(rank, len(s)-1))]
}

// CDF returns the points of the empirical distribution function of
// samples: sorted values and, for each, the fraction of samples at or
// below it.
func CDF(samples []float64) (xs, ys []float64) {
	xs = slices.Clone(samples)
	slices.Sort(xs)
	ys = make([]float64, len(xs))
	for i := range xs {
		ys[i] = float64(i+1) / float64(len(xs))
	}
	return xs, ys
}
