// Package stats summarises repeated benchmark measurements: median, min and
// max, the form every perf/ table reports (the development machine's disk
// swings 10x, so means of a few runs mislead and ranges must be shown).
package stats

import (
	"fmt"
	"math"
	"sort"
)

// Summary describes a sample of measurements.
type Summary struct {
	N      int     `json:"n"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
}

// Summarize returns the summary of xs. NaNs are dropped; an empty sample
// gives N == 0 and NaN fields. xs is not modified.
func Summarize(xs []float64) Summary {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return Summary{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	sort.Float64s(v)
	return Summary{N: len(v), Median: Median(v), Min: v[0], Max: v[len(v)-1]}
}

// Median returns the median of xs (the mean of the two middle values for an
// even count), or NaN for an empty slice. xs is not modified.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	v := append([]float64(nil), xs...)
	sort.Float64s(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m]
	}
	return (v[m-1] + v[m]) / 2
}

// Gain is the seed's "gain" column: how much less time after takes than
// before, in percent (positive = faster).
func Gain(before, after float64) float64 {
	if before == 0 || math.IsNaN(before) || math.IsNaN(after) {
		return math.NaN()
	}
	return (before - after) / before * 100
}

// Format prints s as "median (min–max)" with the given decimals, or "–"
// for an empty sample.
func (s Summary) Format(decimals int) string {
	if s.N == 0 {
		return "–"
	}
	if s.N == 1 {
		return fmt.Sprintf("%.*f", decimals, s.Median)
	}
	return fmt.Sprintf("%.*f (%.*f–%.*f)", decimals, s.Median, decimals, s.Min, decimals, s.Max)
}
