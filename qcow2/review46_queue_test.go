package qcow2

import (
	"math/rand/v2"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestReview46_QueueCrashUnflushedOldOrNew is the crash check of
// review46_crash_test.go through a Queue (Q14-Q16): batches of writes
// (fast overwrites and the allocator's new clusters, with copies and
// zeroings of the backing file's data), queued zeroings, discards, reads
// and flushes. Requests in one batch never share a sector, so each
// sector's possible values are the ones noted. Every read must return
// the model (reads racing other clusters' allocations), and after a
// crash every sector must read a value it held since the last completed
// queued flush.
func TestReview46_QueueCrashUnflushedOldOrNew(t *testing.T) {
	t.Parallel()
	points := crashPoints(30, 10)
	cases := []r46Case{
		{"default", CreateOptions{ClusterSize: 4096}, Options{}, false},
		{"fill-zeroes", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false},
		{"backing", CreateOptions{ClusterSize: 4096}, Options{}, true},
		{"lazy-backing", CreateOptions{ClusterSize: 4096, LazyRefcounts: true}, Options{}, true},
		{"xl2-backing", CreateOptions{ClusterSize: 32 << 10, ExtendedL2: true}, Options{}, true},
		{"prealloc-off", CreateOptions{ClusterSize: 4096}, Options{Prealloc: "off"}, false},
		{"fill-c64k", CreateOptions{}, Options{PreallocFill: FillZeroes, PreallocSize: 4 << 20}, false},
		{"xl2-fill", CreateOptions{ClusterSize: 32 << 10, ExtendedL2: true}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false},
	}
	r46RunCrashCases(t, cases, points, false, r46QueueWorkload)
}

func r46QueueWorkload(t *testing.T, seed uint64, co CreateOptions, o Options, bdata []byte, want func(int) bool) []r46Point {
	rng := rand.New(rand.NewPCG(seed, 48))
	r := newR46Recorder(t, memdev.New(memdev.Options{}), seed, 49, co, bdata, want)
	r.flushed()
	im, err := OpenDevice(r.dev, o)
	if err != nil {
		t.Fatal(err)
	}
	const depth = 32
	bq, err := im.NewQueue(depth)
	if err != nil {
		t.Fatal(err)
	}
	cs := int64(im.Geometry().ClusterSize)
	const sec = crashSector
	out := make([]*block.Req, depth)
	id := uint64(2)
	next := int64(0) // sequential allocating writes
	for round := 0; round < 40; round++ {
		if rng.IntN(6) == 0 {
			fl := &block.Req{Op: block.OpFlush}
			if err := bq.Submit(fl); err != nil {
				t.Fatal(err)
			}
			if _, err := bq.Wait(out, 1); err != nil || fl.Err != nil {
				t.Fatal(err, fl.Err)
			}
			r.flushed()
			continue
		}
		var reqs []*block.Req
		var want [][]byte // a read's expected bytes
		used := map[int64]bool{}
		free := func(off, n int64) bool {
			for s := off / sec; s < (off+n+sec-1)/sec; s++ {
				if used[s] {
					return false
				}
			}
			for s := off / sec; s < (off+n+sec-1)/sec; s++ {
				used[s] = true
			}
			return true
		}
		for len(reqs) < depth-2 && rng.IntN(20) != 0 {
			var off, n int64
			switch k := rng.IntN(100); {
			case k < 35: // small writes walking forward: several per new cluster
				n = (1 + rng.Int64N(4)) * sec
				off, next = next, (next+n+rng.Int64N(2)*cs)%(r46Size-8*sec)
			case k < 70:
				n = (1 + rng.Int64N(cs/sec)) * sec
				off = rng.Int64N((r46Size-n)/sec) * sec
				if rng.IntN(2) == 0 { // inside one cluster: the fast path or the allocator
					n = min(n, cs)
					off = off / cs * cs
					off += rng.Int64N((cs-n)/sec+1) * sec
				}
			case k < 80:
				n = (1 + rng.Int64N(2*cs/sec)) * sec
				off = rng.Int64N((r46Size-n)/sec) * sec
				if !free(off, n) {
					continue
				}
				op := block.OpWriteZeroes
				if rng.IntN(3) == 0 {
					op = block.OpDiscard
					off, n = off/cs*cs, cs
					if off+n > r46Size || !free(off, n) {
						continue
					}
				}
				reqs = append(reqs, &block.Req{Op: op, Off: off, Len: n, Flags: block.Flags(rng.IntN(2)) * block.MayUnmap})
				want = append(want, nil)
				continue
			default:
				n = (1 + rng.Int64N(cs/sec)) * sec
				off = rng.Int64N((r46Size-n)/sec) * sec
				if !free(off, n) {
					continue
				}
				reqs = append(reqs, &block.Req{Op: block.OpRead, Off: off, Buf: make([]byte, n)})
				want = append(want, append([]byte(nil), r.model[off:off+n]...))
				continue
			}
			if !free(off, n) {
				continue
			}
			b := r46Data(id, off, int(n))
			id++
			reqs = append(reqs, &block.Req{Op: block.OpWrite, Off: off, Buf: b})
			want = append(want, nil)
		}
		if len(reqs) == 0 {
			continue
		}
		for _, q := range reqs {
			switch q.Op {
			case block.OpWrite:
				r.note(q.Off, int64(len(q.Buf)), q.Buf)
			case block.OpWriteZeroes:
				r.note(q.Off, q.Len, make([]byte, q.Len))
			case block.OpDiscard:
				// Whole clusters (v3): zeros, or nothing on partial ones.
				r.note(q.Off, q.Len, make([]byte, q.Len))
			}
		}
		if err := bq.Submit(reqs...); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < len(reqs); {
			k, err := bq.Wait(out, 1)
			if err != nil {
				t.Fatal(err)
			}
			got += k
		}
		for i, q := range reqs {
			if q.Err != nil {
				t.Fatalf("round %d: %v at %d: %v", round, q.Op, q.Off, q.Err)
			}
			switch q.Op {
			case block.OpWrite:
				copy(r.model[q.Off:], q.Buf)
			case block.OpWriteZeroes, block.OpDiscard:
				clear(r.model[q.Off : q.Off+q.Len])
			case block.OpRead:
				if j := testkit.FirstDiff(q.Buf, want[i]); j >= 0 {
					t.Fatalf("round %d: read at %d differs at %d", round, q.Off, q.Off+int64(j))
				}
			}
		}
	}
	if err := bq.Close(); err != nil {
		t.Fatal(err)
	}
	if m := im.Metrics(); m.QueueFast == 0 || m.QueueAlloc == 0 {
		t.Fatalf("the queue's fast path or allocator took nothing: %+v", m)
	}
	if i := testkit.FirstDiff(testkit.ReadAll(t, im), r.model); i >= 0 {
		t.Fatalf("the image differs from the model at %d", i)
	}
	im.waitFillIdle()
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return r.pts
}
