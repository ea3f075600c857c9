package bench

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

func TestHistogram_Buckets_Contiguous(t *testing.T) {
	var prev uint64
	for i := 0; i < numBuckets; i++ {
		lo, hi := bucketRange(i)
		if i > 0 && lo != prev+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prev)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d,%d] maps to %d,%d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		prev = hi
		if hi == ^uint64(0) {
			if i != numBuckets-1 {
				t.Fatalf("range ends early at bucket %d of %d", i, numBuckets)
			}
			return
		}
	}
	t.Fatalf("buckets end at %d, not at 2^64-1", prev)
}

func TestHistogram_Quantile_Accuracy(t *testing.T) {
	seed := testkit.Seed(t)
	r := rand.New(rand.NewPCG(seed, 1))
	var h, a, b Histogram
	vals := make([]time.Duration, 100000)
	for i := range vals {
		vals[i] = time.Duration(r.ExpFloat64() * 200e3)
		h.Record(vals[i])
		if i%2 == 0 {
			a.Record(vals[i])
		} else {
			b.Record(vals[i])
		}
	}
	a.Merge(&b)
	slices.Sort(vals)
	for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
		idx := max(int(float64(len(vals))*q+0.999999)-1, 0)
		want := vals[idx]
		for _, hh := range []*Histogram{&h, &a} {
			got := hh.Quantile(q)
			if d := float64(got-want) / float64(want+1); d > 0.02 || d < -0.02 {
				t.Errorf("q%.3f = %v, want %v within 2%%", q, got, want)
			}
		}
	}
	if h.Max() != vals[len(vals)-1] || a.Count() != uint64(len(vals)) {
		t.Errorf("max %v count %d", h.Max(), a.Count())
	}
	if n := testing.AllocsPerRun(100, func() { h.Record(12345) }); n != 0 {
		t.Errorf("Record allocates %v", n)
	}
}
