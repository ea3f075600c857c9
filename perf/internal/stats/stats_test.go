package stats

import (
	"math"
	"testing"
)

func TestSummarize_OddEvenEmpty(t *testing.T) {
	for _, tc := range []struct {
		in          []float64
		med, lo, hi float64
		n           int
	}{
		{[]float64{3, 1, 2}, 2, 1, 3, 3},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4, 4},
		{[]float64{5}, 5, 5, 5, 1},
		{[]float64{math.NaN(), 7, 9}, 8, 7, 9, 2},
	} {
		in := append([]float64(nil), tc.in...)
		s := Summarize(tc.in)
		if s.N != tc.n || s.Median != tc.med || s.Min != tc.lo || s.Max != tc.hi {
			t.Errorf("Summarize(%v) = %+v, want n=%d med=%v min=%v max=%v", in, s, tc.n, tc.med, tc.lo, tc.hi)
		}
		for i := range in {
			if !(in[i] == tc.in[i] || math.IsNaN(in[i]) && math.IsNaN(tc.in[i])) {
				t.Fatalf("Summarize modified its input: %v", tc.in)
			}
		}
	}
	if s := Summarize(nil); s.N != 0 || !math.IsNaN(s.Median) || s.Format(2) != "–" {
		t.Errorf("Summarize(nil) = %+v", s)
	}
}

func TestGainAndFormat(t *testing.T) {
	// The seed's ssd row: 61.153 -> 36.313 s is +41 %; hdd 112.676 -> 122.056 s is -8 %.
	if g := Gain(61.153, 36.313); math.Round(g) != 41 {
		t.Errorf("ssd gain = %v", g)
	}
	if g := Gain(112.676, 122.056); math.Round(g) != -8 {
		t.Errorf("hdd gain = %v", g)
	}
	if !math.IsNaN(Gain(0, 1)) {
		t.Error("gain with zero before should be NaN")
	}
	s := Summarize([]float64{1.5, 1.25, 2})
	if got, want := s.Format(2), "1.50 (1.25–2.00)"; got != want {
		t.Errorf("Format = %q, want %q", got, want)
	}
}
