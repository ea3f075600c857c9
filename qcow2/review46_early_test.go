package qcow2

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestReview46_CrashConcurrentWritersOldOrNew is the crash check of
// review46_crash_test.go with writers racing into the same new clusters:
// four goroutines write sectors of their own (sector%4), a few at a time
// inside the clusters of a phase, so one allocates a cluster while the
// others write into it early (Q10) or wait for it (Q7), in fresh space,
// filled space (Q11) or reused space; a flush may end a phase. After a
// crash at any device op every sector reads a value it held since the
// last flush, and the reopened clone takes new writes.
func TestReview46_CrashConcurrentWritersOldOrNew(t *testing.T) {
	t.Parallel()
	points := crashPoints(30, 10)
	cases := []r46Case{
		{"default", CreateOptions{ClusterSize: 4096}, Options{}, false},
		{"fill-zeroes", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false},
		{"backing", CreateOptions{ClusterSize: 4096}, Options{}, true},
		{"prealloc-off", CreateOptions{ClusterSize: 4096}, Options{Prealloc: "off"}, false},
		{"xl2", CreateOptions{ClusterSize: 16 << 10, ExtendedL2: true}, Options{}, false},
	}
	r46RunCrashCases(t, cases, points, false, r46ConcurrentWorkload)
}

func r46ConcurrentWorkload(t *testing.T, seed uint64, co CreateOptions, o Options, bdata []byte, want func(int) bool) []r46Point {
	rng := rand.New(rand.NewPCG(seed, 51))
	// Each device write yields, so that the other writers reach a
	// cluster while its allocation is in flight.
	mem := memdev.New(memdev.Options{OnWrite: func(int64, int64) {
		for range 4 {
			runtime.Gosched()
		}
	}})
	r := newR46Recorder(t, mem, seed, 52, co, bdata, want)
	r.flushed()
	im, err := OpenDevice(r.dev, o)
	if err != nil {
		t.Fatal(err)
	}
	cs := int64(im.Geometry().ClusterSize)
	const sec, writers = crashSector, 4
	spc := cs / sec // sectors per cluster
	id := uint64(2)
	for phase := 0; phase < 24; phase++ {
		// The phase's clusters: new ones in guest order, or anywhere.
		first := rng.Int64N(r46Size/cs - 4)
		if phase < 12 {
			first = int64(phase) * 4 % (r46Size/cs - 4)
		}
		type w struct {
			off int64
			b   []byte
		}
		plan := make([][]w, writers)
		for g := range plan {
			for k := 0; k < 6; k++ {
				c := first + rng.Int64N(4)
				s := rng.Int64N(spc/writers)*writers + int64(g) // a sector of g's own
				off := c*cs + s*sec
				plan[g] = append(plan[g], w{off, r46Data(id, off, sec)})
				id++
			}
		}
		for _, ws := range plan {
			for _, x := range ws {
				r.note(x.off, sec, x.b)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for _, ws := range plan {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, x := range ws {
					if _, err := im.WriteAt(x.b, x.off); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, ws := range plan {
			for _, x := range ws {
				copy(r.model[x.off:], x.b)
			}
		}
		if rng.IntN(3) == 0 {
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			r.flushed()
		}
	}
	if i := testkit.FirstDiff(testkit.ReadAll(t, im), r.model); i >= 0 {
		t.Fatalf("the image differs from the model at %d", i)
	}
	if m := im.Metrics(); m.EarlyWrites+m.AllocWaits == 0 {
		t.Logf("no writer met another's allocation: %+v", m)
	} else {
		t.Logf("early writes %d, waits %d", m.EarlyWrites, m.AllocWaits)
	}
	im.waitFillIdle()
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return r.pts
}
