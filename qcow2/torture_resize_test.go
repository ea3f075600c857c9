package qcow2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qring/qring/block"
)

// Resizes and snapshots inside the torture suite's concurrent phases.
// The sequential ops grow, shrink and snapshot with nothing else
// running; these run them beside the batch's writers, zeroings,
// discards, queue and flushes, under crash clones (memdev backends):
//
//   - a resizer grows the image past its end (a growth's zeroing of the
//     old end's cluster, the L1 growth; with TruncatePrealloc's
//     metadata, falloc and full modes the grown range's clusters linked
//     first), checks that the grown range reads as zeros, lets a tail
//     writer write into it, and shrinks back to the old end while that
//     writer still writes (Q18: a write that checked against the grown
//     size must not land past the cut; it fails with ErrOutOfRange or
//     lands before and is discarded). The size is the model's again
//     after the batch, and the range reads as zeros when a later op
//     grows the image over it.
//   - a snapshotter creates a snapshot and deletes it while the writes
//     run (CreateSnapshot's pause of overwrites of COPIED clusters and
//     its gate wait, Q12; DeleteSnapshot's held clusters): the guest
//     view must not change, and a crash clone inside may only need its
//     COPIED flags set (verifyClone, inSnap).
//
// A batch's plan comes from its own seed (a stream of its own), so a
// seed's op sequence is what it was without them.

// tbatchAdmin is a batch's resizer and snapshotter plan.
type tbatchAdmin struct {
	grow     int64  // the resizer grows the image by this much (0: no resizer)
	mode     string // TruncatePrealloc's mode (PreallocOff where the image refuses the others)
	tail     []top  // the tail writer's writes, offsets from the old end
	cutAfter int    // the resizer shrinks back once this many tail writes are done
	snap     bool   // a snapshotter runs
	snapWait time.Duration
	snapHold time.Duration
	widen    int // an amender changes the refcount width by this many doublings (0: none) and back
	amWait   time.Duration
}

func genBatchAdmin(seed uint64) tbatchAdmin {
	rx := rand.New(rand.NewPCG(seed, 0x61646d696e))
	var a tbatchAdmin
	if rx.IntN(3) == 0 {
		a.grow = []int64{512 * (1 + rx.Int64N(8)), 64 << 10, 1<<20 + 512, 4 << 20}[rx.IntN(4)]
		a.mode = []string{PreallocOff, PreallocOff, PreallocMetadata, PreallocFalloc, PreallocFull}[rx.IntN(5)]
		k := 1 + rx.IntN(8)
		for range k {
			n := 1 + rx.Int64N(min(a.grow, 192<<10))
			a.tail = append(a.tail, top{kind: opWrite, off: rx.Int64N(a.grow - n + 1), n: n, pat: rx.Uint64()})
		}
		a.cutAfter = rx.IntN(k + 1)
	}
	if rx.IntN(4) == 0 {
		a.snap = true
		a.snapWait = time.Duration(rx.IntN(2000)) * time.Microsecond
		a.snapHold = time.Duration(rx.IntN(2000)) * time.Microsecond
	}
	if rx.IntN(6) == 0 {
		a.widen = 1 + rx.IntN(3)
		a.amWait = time.Duration(rx.IntN(3000)) * time.Microsecond
	}
	return a
}

func (a tbatchAdmin) String() string {
	s := ""
	if a.grow > 0 {
		s += fmt.Sprintf(", resizer +%d (%s, %d tail writes, cut after %d)", a.grow, a.mode, len(a.tail), a.cutAfter)
	}
	if a.snap {
		s += fmt.Sprintf(", snapshotter (after %v, held %v)", a.snapWait, a.snapHold)
	}
	if a.widen > 0 {
		s += fmt.Sprintf(", amender (refcount width x%d and back, after %v)", 1<<a.widen, a.amWait)
	}
	return s
}

// batchAdminRun is one batch's resizer and snapshotter at work.
type batchAdminRun struct {
	mu       sync.Mutex
	leftSnap string // a snapshot the snapshotter could not delete (busy): deleted after the batch

	resizes, resizeSkips, snaps, snapSkips, tailWrites, tailCut, amends, amendSkips atomic.Int64
}

// amendWidth is the refcount width the amender changes to from bits:
// wider by widen doublings, at most 64 (from 64, 16).
func amendWidth(bits, widen int) uint32 {
	if bits >= 64 {
		return 16
	}
	return uint32(min(64, bits<<widen))
}

// startBatchAdmin starts the batch's resizer, tail writer and
// snapshotter on wg. size is the model's size.
func (r *trun) startBatchAdmin(i int, b *tbatch, wg *sync.WaitGroup, failf func(string, ...any), stopped func() bool, guard func(string)) *batchAdminRun {
	a := b.admin
	im := r.im
	size := r.size
	run := &batchAdminRun{}
	if a.snap {
		r.cmu.Lock()
		r.inSnap = true // a crash clone may need its COPIED flags set
		r.cmu.Unlock()
		wg.Go(func() {
			defer guard("snapshotter")
			time.Sleep(a.snapWait)
			name := fmt.Sprintf("b%d", i)
			tortureTracef("batch snapshot create %s", name)
			if _, err := im.CreateSnapshot(name); err != nil {
				if errors.Is(err, ErrUnsupported) || errors.Is(err, ErrSnapshotBusy) {
					run.snapSkips.Add(1)
					return
				}
				failf("snapshotter: create %s: %v", name, err)
				return
			}
			run.snaps.Add(1)
			time.Sleep(a.snapHold)
			tortureTracef("batch snapshot delete %s", name)
			if err := im.DeleteSnapshot(name); err != nil {
				if errors.Is(err, ErrSnapshotBusy) {
					run.mu.Lock()
					run.leftSnap = name
					run.mu.Unlock()
					return
				}
				failf("snapshotter: delete %s: %v", name, err)
			}
		})
	}
	if a.widen > 0 {
		// SetRefcountBits while the writes run (refbits.go: it waits
		// for allocations in flight and rewrites every refcount block
		// and the table past the end of the file, one header write
		// switching): refused on version 2, while the resizer runs or
		// allocations keep coming; what it leaves changed is undone
		// after the batch.
		wg.Go(func() {
			defer guard("amender")
			time.Sleep(a.amWait)
			to := amendWidth(r.cfg.rb, a.widen)
			tortureTracef("batch refcount width %d -> %d", r.cfg.rb, to)
			if err := im.SetRefcountBits(to); err != nil {
				if errors.Is(err, ErrUnsupported) || errors.Is(err, ErrResizeBusy) || errors.Is(err, ErrSnapshotBusy) {
					run.amendSkips.Add(1)
					return
				}
				failf("amender: refcount width %d: %v", to, err)
				return
			}
			run.amends.Add(1)
			tortureTracef("batch refcount width %d -> %d", to, r.cfg.rb)
			if err := im.SetRefcountBits(uint32(r.cfg.rb)); err != nil {
				if errors.Is(err, ErrUnsupported) || errors.Is(err, ErrResizeBusy) || errors.Is(err, ErrSnapshotBusy) {
					return // after the batch
				}
				failf("amender: refcount width back to %d: %v", r.cfg.rb, err)
			}
		})
	}
	if a.grow == 0 {
		return run
	}
	mode := a.mode
	if r.cfg.backing || r.cfg.encrypted() {
		mode = PreallocOff // refused there (the grown range must read as zeros)
	}
	var (
		grownOK  atomic.Bool
		grown    = make(chan struct{}) // the growth is done (grownOK) or refused
		cutReady = make(chan struct{}) // cutAfter tail writes are done
		cutOnce  sync.Once
		cutting  atomic.Bool // the shrink has been called
	)
	readyToCut := func() { cutOnce.Do(func() { close(cutReady) }) }
	wg.Go(func() {
		defer guard("resizer")
		end := size + a.grow
		tortureTracef("batch grow to %d (%s)", end, mode)
		err := im.TruncatePrealloc(end, mode)
		if err != nil {
			close(grown)
			if errors.Is(err, ErrUnsupported) || mode != PreallocOff && errors.Is(err, ErrResizeBusy) {
				// A version 2 image with snapshots, an encrypted one
				// with a raw data file: nothing changed. A
				// preallocating growth waits for the allocations in
				// flight to drain (lockIdle) and gives up while the
				// writers keep them coming (held writes, the race
				// detector): the size stays, and guests see nothing.
				run.resizeSkips.Add(1)
				return
			}
			failf("resizer: grow to %d (%s): %v", end, mode, err)
			return
		}
		// The grown range reads as zeros (Q18), before anyone writes it.
		got := make([]byte, a.grow)
		if _, err := im.ReadAt(got, size); err != nil {
			close(grown)
			failf("resizer: read the grown range: %v", err)
			return
		}
		for k, c := range got {
			if c != 0 {
				close(grown)
				failf("resizer: grown range [%#x,+%#x) reads %#x at %#x, want zeros", size, a.grow, c, size+int64(k))
				return
			}
		}
		grownOK.Store(true)
		close(grown)
		<-cutReady
		cutting.Store(true)
		tortureTracef("batch shrink back to %d", size)
		if err := im.Shrink(size); err != nil {
			// Busy (the writers kept coming), or a version 2 image
			// with the snapshotter's snapshot: shrunk after the batch.
			if !errors.Is(err, ErrResizeBusy) && !errors.Is(err, ErrUnsupported) {
				failf("resizer: shrink to %d: %v", size, err)
			}
			return
		}
		run.resizes.Add(1)
	})
	wg.Go(func() {
		defer guard("tail writer")
		defer readyToCut()
		<-grown
		if !grownOK.Load() {
			return
		}
		for k, o := range a.tail {
			if k == a.cutAfter {
				readyToCut()
			}
			if stopped() {
				return
			}
			data := make([]byte, o.n)
			fillPattern(data, o.pat)
			tortureTracef("batch tail write [%#x,+%#x)", size+o.off, o.n)
			if _, err := im.WriteAt(data, size+o.off); err != nil {
				if errors.Is(err, ErrOutOfRange) && cutting.Load() {
					run.tailCut.Add(1)
					continue
				}
				failf("tail writer: write [%#x,+%#x): %v", size+o.off, o.n, err)
				return
			}
			run.tailWrites.Add(1)
		}
	})
	return run
}

// finishBatchAdmin runs after the batch's goroutines: what the
// resizer and the snapshotter left (a snapshot a busy delete kept, a
// shrink refused as busy) is undone now, with nothing running.
func (r *trun) finishBatchAdmin(i int, b *tbatch, run *batchAdminRun) {
	defer func() {
		r.st.BatchResizes += run.resizes.Load()
		r.st.BatchResizeSkips += run.resizeSkips.Load()
		r.st.BatchSnaps += run.snaps.Load()
		r.st.BatchSnapSkips += run.snapSkips.Load()
		r.st.BatchTailWrites += run.tailWrites.Load()
		r.st.BatchTailCut += run.tailCut.Load()
		r.st.BatchAmends += run.amends.Load()
		r.st.BatchAmendSkips += run.amendSkips.Load()
	}()
	if b.admin.snap {
		if run.leftSnap != "" {
			if err := r.im.DeleteSnapshot(run.leftSnap); err != nil {
				r.fatalf("batch op %d: delete %s after the batch: %v", i, run.leftSnap, err)
			}
		}
		r.cmu.Lock()
		r.inSnap = false
		r.cmu.Unlock()
	}
	if b.admin.widen > 0 {
		if bits := 1 << r.im.Header().RefcountOrder; bits != r.cfg.rb {
			if err := r.im.SetRefcountBits(uint32(r.cfg.rb)); err != nil {
				r.fatalf("batch op %d: refcount width back to %d after the batch: %v", i, r.cfg.rb, err)
			}
		}
	}
	if b.admin.grow == 0 {
		return
	}
	sz, err := r.im.Size()
	if err != nil {
		r.fatalf("batch op %d: size: %v", i, err)
	}
	if sz != r.size {
		if err := r.im.Shrink(r.size); err != nil {
			r.fatalf("batch op %d: shrink back to %d after the batch: %v", i, r.size, err)
		}
		run.resizes.Add(1)
	}
}

// zeroAllocate is the Allocate flag for a third of the sequential
// zeroings, from a stream of the seed's own (the op sequence is as
// before): an image is a device that zeroes efficiently or refuses,
// having written nothing (block B3; what an NBD fast zero or a qcow2
// image over this one asks). Its edges become zero clusters only where
// they read as zeros, on version 3; a refusal leaves the contents as
// they were. Batches draw theirs from a stream of their own
// (batchZeroAllocate): beside a writer in the same cluster an Allocate
// may be refused part-way (B3), which they allow.
func (r *trun) zeroAllocate(i int) block.Flags {
	if rand.New(rand.NewPCG(r.seed, uint64(i)^0x7a65726f616c6c)).IntN(3) == 0 {
		return block.Allocate
	}
	return 0
}
