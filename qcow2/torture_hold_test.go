package qcow2

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// Deterministic interleavings forced with block/holddev: one device op is
// held until the test releases it, so the engine paths that depend on
// timing (early writes into a cluster under allocation, allocations
// waiting for a fill piece, writes racing a held refcount write-back or
// a held flush) happen on every run.

const holdTimeout = 10 * time.Second

type holdRig struct {
	t   *testing.T
	mem *memdev.Dev
	hd  *holddev.Dev
	im  *Image
	o   Options
}

func newHoldRig(t *testing.T, co CreateOptions, o Options) *holdRig {
	t.Helper()
	mem := memdev.New(memdev.Options{})
	if co.Size == 0 {
		co.Size = 64 << 20
	}
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	hd := holddev.New(mem, holddev.Options{NoClose: true})
	im, err := OpenDevice(hd, o)
	if err != nil {
		t.Fatal(err)
	}
	r := &holdRig{t: t, mem: mem, hd: hd, im: im, o: o}
	t.Cleanup(func() {
		hd.ReleaseAll()
		if r.im != nil {
			r.im.Close()
		}
	})
	return r
}

// finish closes the image and checks it with our Check (clean) and
// qemu-img check.
func (r *holdRig) finish(want map[int64][]byte) {
	t := r.t
	t.Helper()
	for off, b := range want {
		bytesEqualAt(t, r.im, off, b, "before close")
	}
	if err := r.im.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	r.im = nil
	im, err := OpenDevice(r.mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	res, err := im.Check(CheckOptions{})
	if err != nil || !res.Clean() {
		t.Fatalf("check: %v %+v", err, res)
	}
	for off, b := range want {
		bytesEqualAt(t, im, off, b, "after reopen")
	}
	if testkit.HaveQemu() {
		p := testkit.Dir(t) + "/hold.qcow2"
		if err := r.mem.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheck(t, p)
	}
}

// async runs fn in a goroutine; the channel yields its error.
func async(fn func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- fn() }()
	return ch
}

func waitErr(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(holdTimeout):
		t.Fatalf("%s: did not complete in %v (deadlock?)", what, holdTimeout)
	}
}

func blocked(ch <-chan error, d time.Duration) bool {
	select {
	case <-ch:
		return false
	case <-time.After(d):
		return true
	}
}

func isData(want []byte) func(holddev.Op) bool {
	return func(o holddev.Op) bool {
		return len(o.Bufs) > 0 && len(o.Bufs[0]) >= len(want) && bytes.Equal(o.Bufs[0][:len(want)], want)
	}
}

func patternBuf(n int, seed uint64) []byte {
	b := make([]byte, n)
	fillPattern(b, seed)
	return b
}

// TestTortureHold_EarlyWrite holds the allocator's data write of a new
// cluster (in fresh space) while a second write into the same cluster
// completes (an early write, Q10), then reads the second write back: an
// acknowledged write must be visible to every later read (bug 2 when
// not). Then a Flush must wait for the link (Q10), and a crash clone
// taken after the Flush must hold both writes.
func TestTortureHold_EarlyWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		co   CreateOptions
		o    Options
	}{
		{"c64k", CreateOptions{}, Options{}},
		{"c64k-no-reserve", CreateOptions{}, Options{PreallocSize: -1}},
		{"c4k-lazy", CreateOptions{ClusterSize: 4096, LazyRefcounts: true}, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newHoldRig(t, tc.co, tc.o)
			im := r.im
			cs := int64(im.Geometry().ClusterSize)
			// Settle the L2 table first.
			if _, err := im.WriteAt([]byte{1}, 0); err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			c := 5 * cs
			a, b := patternBuf(1024, 1), patternBuf(1024, 2)
			h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(a)})
			wa := async(func() error { _, err := im.WriteAt(a, c); return err })
			if !h.Wait(holdTimeout) {
				t.Fatal("the allocator's data write never reached the device")
			}
			before := im.Metrics().EarlyWrites
			wb := async(func() error { _, err := im.WriteAt(b, c+cs/2); return err })
			early := !blocked(wb, 500*time.Millisecond)
			var rywErr string
			if early {
				if im.Metrics().EarlyWrites == before {
					t.Fatalf("second write completed while the allocation was held, without an early write")
				}
				// Read-your-writes: b was acknowledged.
				got := make([]byte, len(b))
				if _, err := im.ReadAt(got, c+cs/2); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, b) {
					rywErr = "an acknowledged early write is not visible to a later read (bug 2)"
				}
				// A Flush must cover b: it waits for the link.
				fl := async(im.Flush)
				if !blocked(fl, 300*time.Millisecond) {
					t.Errorf("Flush returned while the allocation b went into was not linked (Q10)")
				}
				h.Release()
				waitErr(t, wa, "allocating write")
				waitErr(t, fl, "flush")
				// Crash now: both writes were flushed.
				clone := r.mem.CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
				ci, err := OpenDevice(clone, Options{})
				if err != nil {
					t.Fatal(err)
				}
				bytesEqualAt(t, ci, c, a, "crash clone after flush: the allocating write")
				bytesEqualAt(t, ci, c+cs/2, b, "crash clone after flush: the early write")
				ci.Close()
			} else {
				t.Logf("no early write: the second write waited for the allocation (allowed)")
				h.Release()
				waitErr(t, wa, "allocating write")
				waitErr(t, wb, "second write")
			}
			r.finish(map[int64][]byte{c: a, c + cs/2: b})
			if rywErr != "" {
				t.Error(rywErr)
			}
		})
	}
}

// TestTortureHold_AckHeld holds the completion of an allocating write
// into non-fresh space (the device did it, the engine does not know
// yet): a second write into the cluster must wait or write early, reads
// of the first range may see old data (not acknowledged), and all ends
// clean.
func TestTortureHold_AckHeld(t *testing.T) {
	r := newHoldRig(t, CreateOptions{ClusterSize: 16384}, Options{PreallocSize: -1})
	im := r.im
	cs := int64(16384)
	// Allocate and free clusters so that new allocations reuse space
	// below the high-water mark (zeroing path, not fresh).
	for i := int64(0); i < 8; i++ {
		if _, err := im.WriteAt(patternBuf(int(cs), uint64(i)), 100*cs+i*cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.Discard(100*cs, 8*cs); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	a, b := patternBuf(512, 3), patternBuf(512, 4)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(a), After: true})
	wa := async(func() error { _, err := im.WriteAt(a, 3*cs+512); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("held completion never reached")
	}
	wb := async(func() error { _, err := im.WriteAt(b, 3*cs+4096); return err })
	time.Sleep(50 * time.Millisecond)
	got := make([]byte, 512)
	if _, err := im.ReadAt(got, 3*cs+512); err != nil {
		t.Fatal(err)
	}
	h.Release()
	waitErr(t, wa, "first write")
	waitErr(t, wb, "second write")
	r.finish(map[int64][]byte{3*cs + 512: a, 3*cs + 4096: b})
}

// TestTortureHold_FillPiece holds a fill piece (prealloc-fill=zeroes)
// while sequential allocations reach its space: they must wait for it
// (Q11: FillWaits), not write under it, and complete once it is released.
func TestTortureHold_FillPiece(t *testing.T) {
	r := newHoldRig(t, CreateOptions{ClusterSize: 65536, Size: 128 << 20}, Options{PreallocFill: FillZeroes, PreallocSize: 8 << 20})
	im := r.im
	zb := &block.ZeroBuf()[0]
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Fn: func(o holddev.Op) bool {
		return len(o.Bufs) == 1 && len(o.Bufs[0]) >= 64<<10 && &o.Bufs[0][0] == zb
	}})
	want := map[int64][]byte{}
	var mu sync.Mutex
	w := async(func() error {
		for i := int64(0); i < 64; i++ {
			b := patternBuf(128<<10, uint64(i))
			if _, err := im.WriteAt(b, i*(128<<10)); err != nil {
				return err
			}
			mu.Lock()
			want[i*(128<<10)] = b
			mu.Unlock()
		}
		return nil
	})
	if !h.Wait(holdTimeout) {
		t.Fatal("no fill piece was written")
	}
	piece := h.Op()
	t.Logf("holding fill piece %v", piece)
	time.Sleep(100 * time.Millisecond)
	h.Release()
	waitErr(t, w, "writes")
	m := im.Metrics()
	t.Logf("fill bytes %d, fill waits %d", m.FillBytes, m.FillWaits)
	r.finish(want)
}

// TestTortureHold_RefcountWriteback holds the first write-back of an
// existing refcount block while several goroutines allocate (tiny caches
// force evictions and dependency-ordered write-backs), then releases it.
func TestTortureHold_RefcountWriteback(t *testing.T) {
	r := newHoldRig(t, CreateOptions{ClusterSize: 512, RefcountBits: 64, Size: 16 << 20},
		Options{L2CacheSize: 1024, L2CacheEntrySize: 512, RefcountCacheSize: 1024})
	im := r.im
	im.mu.Lock()
	blocks := map[int64]bool{}
	for _, off := range im.reftable {
		if off != 0 {
			blocks[int64(off)] = true
		}
	}
	im.mu.Unlock()
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Fn: func(o holddev.Op) bool { return blocks[o.Off] }})
	hammer(t, r, h, 4)
}

// TestTortureHold_Flush holds the device flush of a guest Flush while
// other goroutines keep writing, then releases it; a crash clone taken
// after the Flush returned must hold everything written before it.
func TestTortureHold_Flush(t *testing.T) {
	r := newHoldRig(t, CreateOptions{ClusterSize: 4096, Size: 16 << 20}, Options{})
	im := r.im
	pre := patternBuf(64<<10, 99)
	if _, err := im.WriteAt(pre, 8<<20); err != nil {
		t.Fatal(err)
	}
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Flush})
	fl := async(im.Flush)
	if !h.Wait(holdTimeout) {
		t.Fatal("flush never reached the device")
	}
	hammer(t, r, h, 3)
	waitErr(t, fl, "flush")
	clone := r.mem.CrashClone(rand.New(rand.NewPCG(3, 4)), 0)
	ci, err := OpenDevice(clone, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ci.Close()
	bytesEqualAt(t, ci, 8<<20, pre, "crash clone after a held flush")
}

// hammer runs g goroutines writing and reading back their own regions
// while h is held, releases h midway, and checks the result.
func hammer(t *testing.T, r *holdRig, h *holddev.Hold, g int) {
	im := r.im
	var wg sync.WaitGroup
	var mu sync.Mutex
	want := map[int64][]byte{}
	errs := make(chan error, g)
	for k := 0; k < g; k++ {
		wg.Go(func() {
			for i := 0; i < 150; i++ {
				off := int64(k)<<20 + int64(i)*1536
				b := patternBuf(1+i%1200, uint64(k*1000+i))
				if _, err := im.WriteAt(b, off); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				want[off] = b
				mu.Unlock()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(200 * time.Millisecond):
	}
	caught := false
	select {
	case <-h.Reached():
		caught = true
	default:
	}
	h.Release()
	select {
	case <-done:
	case <-time.After(holdTimeout):
		t.Fatalf("writers did not finish after the release (deadlock?)")
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !caught {
		t.Logf("the hold caught nothing in the first 200 ms")
	}
	r.finish(want)
}
