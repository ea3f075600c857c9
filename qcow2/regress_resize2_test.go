package qcow2

// Found by a review of the resize change (Q18): each test but the ones
// marked "sanity" failed on the code before its fix, and its comment
// describes that failure.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// Shrink leaves zero-flag L2 entries past the new end; SetVersion(2)
// scans only [0, hdr.Size) and downgrades, and Check then finds v2
// entries with the zero flag.
func TestRegress_ShrinkThenDowngradeIsClean(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 * cs, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0xaa}, 4*cs), 0)
	if err := im.Shrink(2 * cs); err != nil {
		t.Fatal(err)
	}
	if err := im.SetVersion(2); err != nil {
		t.Fatalf("downgrade after a shrink refused: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	mustClean(t, im2)
}

// growL1's header flush fails; a write that passed its lock-free state
// check before the failure then links a new L2 table into the old L1
// table (beginAllocLocked / ensureL2Locked do not look at writesLost),
// is acknowledged, and is flushed; the header on the device names the
// new L1 table, which lacks that link: the write is gone on reopen.
func TestRegress_GrowL1FailureRefusesRacingWrite(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	var armed, headerWritten atomic.Bool
	ed := errordev.New(mem, headerFlushFault(&armed, &headerWritten), errordev.Options{})
	hd := holddev.New(ed, holddev.Options{NoClose: true})
	im, err := OpenDevice(hd, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer hd.ReleaseAll()
	a := bytes.Repeat([]byte{0xaa}, 4096)
	mustWrite(t, im, a, 0)
	armed.Store(true)
	h := hd.Hold(holddev.Match{Kinds: holddev.Flush, Fn: func(holddev.Op) bool { return headerWritten.Load() }})
	tr := async(func() error { return im.Truncate(1 << 40) })
	if !h.Wait(holdTimeout) {
		t.Fatal("the header flush never came")
	}
	b := bytes.Repeat([]byte{0xbb}, 4096)
	w := async(func() error { _, err := im.WriteAt(b, 600<<20); return err }) // L1 entry 1: a new L2 table
	time.Sleep(100 * time.Millisecond)                                        // W passed checkWrite, waits for mu
	h.Release()
	if err := <-tr; err == nil {
		t.Fatal("growth succeeded")
	}
	werr := <-w
	if werr == nil {
		werr = im.Flush()
	}
	t.Logf("W: %v", werr)
	im.Close()
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if got := readBack(t, im2, 600<<20, 4096); werr == nil && !bytes.Equal(got, b) {
		t.Fatalf("an acknowledged and flushed write reads %#x after reopen", got[0])
	}
}

// Shrink zeroes the last cluster's tail past the new end before it cuts
// the size and waits; when the wait gives up (ErrResizeBusy, "the size
// is left as it was") the size comes back but the tail's data is gone.
func TestRegress_RefusedShrinkKeepsData(t *testing.T) {
	const cs = 64 << 10
	const newSize = 32<<20 + 4096
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	im.idleWait = 200 * time.Millisecond
	c := bytes.Repeat([]byte{0xcc}, cs)
	mustWrite(t, im, c, 32<<20)
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), 0)
	a := bytes.Repeat([]byte{0xaa}, 4096)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Fn: isData(a)})
	w := async(func() error { _, err := im.WriteAt(a, 0); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("W never reached the device")
	}
	err := im.Shrink(newSize)
	h.Release()
	waitErr(t, w, "W")
	if !errors.Is(err, ErrResizeBusy) {
		t.Fatalf("Shrink: %v, want ErrResizeBusy", err)
	}
	if n, _ := im.Size(); n != 64<<20 {
		t.Fatalf("size %d", n)
	}
	if got := readBack(t, im, newSize, cs-4096); !bytes.Equal(got, c[:cs-4096]) {
		t.Fatalf("a refused Shrink changed data inside the size it left: reads %#x, want 0xcc", got[0])
	}
}

// Truncate over a backing file makes the grown range zero clusters
// before the header names the new size. If that header update fails (or
// the process dies there), the zero clusters lie past the virtual end;
// SetVersion(2) scans only [0, size) and downgrades, and Check finds
// zero flags on a version 2 image. (Shrink leaves the same behind.)
func TestRegress_FailedGrowThenDowngradeRefused(t *testing.T) {
	const cs = 64 << 10
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0xbd}, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "top.qcow2")
	if err := Create(p, CreateOptions{Size: 2 << 20, ClusterSize: cs, BackingFile: base, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	im, err := Open(p, Options{Opener: func(path string, ro bool) (block.Device, error) {
		d, err := DefaultOpener(path, ro)
		if err != nil || path != p {
			return d, err
		}
		return errordev.New(d, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
			if armed.Load() && op == errordev.Write && off == 0 {
				armed.Store(false)
				return errordev.ErrInjectedEIO
			}
			return nil
		}), errordev.Options{}), nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if err := im.Truncate(4 << 20); err == nil {
		t.Fatal("growth succeeded despite the failed header write")
	}
	if n, _ := im.Size(); n != 2<<20 {
		t.Fatalf("size %d", n)
	}
	if err := im.SetVersion(2); err != nil {
		// The failed header write refuses writes (Q4); were it let
		// through, the zero clusters past the end must stop it.
		if !errors.Is(err, ErrZeroClusters) && !errors.Is(err, ErrWritesLost) {
			t.Fatalf("downgrade: %v, want ErrWritesLost or ErrZeroClusters", err)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	ownCheck(t, p)
}

// The same without any failure: a SetVersion(2) that runs while
// Truncate is zeroing the range over the backing file scans only the
// old size, downgrades, and the growth then publishes a v2 image with
// zero clusters inside its size.
func TestRegress_GrowRacingDowngradeIsClean(t *testing.T) {
	const cs = 4096 // an L2 table covers 2 MiB
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0xbd}, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "top.qcow2")
	if err := Create(p, CreateOptions{Size: 2 << 20, ClusterSize: cs, BackingFile: base, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	var hd *holddev.Dev
	im, err := Open(p, Options{Opener: func(path string, ro bool) (block.Device, error) {
		d, err := DefaultOpener(path, ro)
		if err != nil || path != p {
			return d, err
		}
		hd = holddev.New(d, holddev.Options{})
		return hd, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer hd.ReleaseAll()
	// The flush of the L2 table for [4 MiB, 6 MiB), taken once [2 MiB,
	// 4 MiB) is zero clusters (L1 entry 1 linked).
	h := hd.Hold(holddev.Match{Kinds: holddev.Flush, Fn: func(holddev.Op) bool { l1 := im.l1.Load(); return l1.size() > 1 && l1.load(1).Offset() != 0 }})
	tr := async(func() error { return im.Truncate(6 << 20) })
	if !h.Wait(holdTimeout) {
		t.Fatal("no flush")
	}
	sv := async(func() error { return im.SetVersion(2) })
	time.Sleep(50 * time.Millisecond) // SetVersion waits for mu
	h.Release()
	waitErr(t, tr, "truncate")
	svErr := <-sv
	t.Logf("SetVersion: %v", svErr)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	ownCheck(t, p)
}

// Shrink zeroes the last cluster's allocated tail "for QEMU, which does
// not zero it when it grows the image again", but decides from
// BlockStatus of the cluster's first run only: with extended L2 an
// unallocated first subcluster hides data in a later one, which stays;
// qemu-img resize then grows the image and the old bytes are back.
func TestRegress_XL2ShrinkZeroesTailForQEMU(t *testing.T) {
	const cs = 64 << 10
	p := filepath.Join(testkit.Dir(t), "x.qcow2")
	if err := Create(p, CreateOptions{Size: 4 * cs, ClusterSize: cs, ExtendedL2: true}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	d := bytes.Repeat([]byte{0xdd}, 2048)
	mustWrite(t, im, d, cs+40960) // subcluster 20 of cluster 1
	if err := im.Shrink(cs + 1024); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "resize", "-f", "qcow2", p, "256K").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img resize: %v %s", err, out)
	}
	im2, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if got := readBack(t, im2, cs+40960, 2048); !bytes.Equal(got, make([]byte, 2048)) {
		t.Fatalf("past the shrunken end, after qemu-img resize, reads %#x", got[0])
	}
}

// While Shrink waits with the size cut, a Discard that ends at the new
// (temporary) size discards the whole last cluster (Discard rounds up
// at the virtual end), hiding the backing data past the new end; the
// Shrink is then refused and restores the size: a range inside the size
// reads zeros instead of the backing file's bytes.
func TestRegress_RefusedShrinkIgnoresCutWindowDiscard(t *testing.T) {
	const cs = 64 << 10
	const newSize = 1<<20 + 4096
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.raw")
	bdata := bytes.Repeat([]byte{0xbd}, 4<<20)
	if err := os.WriteFile(base, bdata, 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "top.qcow2")
	if err := Create(p, CreateOptions{Size: 2 << 20, ClusterSize: cs, BackingFile: base, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	var hd *holddev.Dev
	im, err := Open(p, Options{Opener: func(path string, ro bool) (block.Device, error) {
		d, err := DefaultOpener(path, ro)
		if err != nil || path != p {
			return d, err
		}
		hd = holddev.New(d, holddev.Options{})
		return hd, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	defer hd.ReleaseAll()
	im.idleWait = 300 * time.Millisecond
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), 0)
	a := bytes.Repeat([]byte{0xaa}, 4096)
	h := hd.Hold(holddev.Match{Kinds: holddev.Write, Fn: isData(a)})
	w := async(func() error { _, err := im.WriteAt(a, 0); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("W never reached the device")
	}
	s := async(func() error { return im.Shrink(newSize) })
	for deadline := time.Now().Add(holdTimeout); ; {
		if n, _ := im.Size(); n == newSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the size was never cut")
		}
		time.Sleep(time.Millisecond)
	}
	if err := im.Discard(1<<20, newSize-1<<20); err != nil {
		t.Fatalf("discard: %v", err)
	}
	serr := <-s
	h.Release()
	waitErr(t, w, "W")
	if !errors.Is(serr, ErrResizeBusy) {
		t.Fatalf("Shrink: %v, want ErrResizeBusy", serr)
	}
	if n, _ := im.Size(); n != 2<<20 {
		t.Fatalf("size %d", n)
	}
	if got := readBack(t, im, newSize, cs-4096); !bytes.Equal(got, bdata[:cs-4096]) {
		t.Fatalf("after a refused Shrink, [new end, cluster end) reads %#x, want the backing file's 0xbd", got[0])
	}
}

// Shrink's header write fails after landing: the header on the device
// names the new size, but Shrink restores the old size in memory and
// writes past the new end are accepted and flushed; a crash then loses
// them (the reopened image is the new size).
func TestRegress_ShrinkHeaderWriteLandedRefusesWrites(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	d := newLandedFailDev(mem, 0, 1) // the header
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	d.armed.Store(true)
	if err := im.Shrink(2 << 20); err == nil {
		t.Fatal("shrink succeeded")
	}
	n, _ := im.Size()
	b := bytes.Repeat([]byte{0xbb}, 4096)
	if _, err := im.WriteAt(b, 3<<20); err != nil {
		if !errors.Is(err, ErrWritesLost) {
			t.Fatalf("size %d after the failed shrink; write: %v, want ErrWritesLost", n, err)
		}
		return
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	// Crash now: open what the device holds.
	im2, err := OpenDevice(memdev.FromBytes(mem.Bytes(), memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	got := make([]byte, 4096)
	if k, _ := im2.ReadAt(got, 3<<20); k != 4096 || !bytes.Equal(got, b) {
		sz, _ := im2.Size()
		t.Fatalf("size %d before the crash, %d after; a flushed write at 3 MiB is lost", n, sz)
	}
}

// Sanity (expected to pass): an image qemu-img shrank through a data
// cluster keeps the bytes past the cut; our Truncate zeroes them, with
// and without extended L2.
func TestRegress_GrowAfterQemuShrinkZeroesTail(t *testing.T) {
	const cs = 64 << 10
	for _, xl2 := range []bool{false, true} {
		p := filepath.Join(testkit.Dir(t), "q.qcow2")
		if err := Create(p, CreateOptions{Size: 4 * cs, ClusterSize: cs, ExtendedL2: xl2}); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, im, bytes.Repeat([]byte{0xdd}, cs), cs)
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("qemu-img", "resize", "-f", "qcow2", "--shrink", p, "66560").CombinedOutput(); err != nil {
			t.Fatalf("qemu-img resize: %v %s", err, out)
		}
		im, err = Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := im.Truncate(4 * cs); err != nil {
			t.Fatal(err)
		}
		if got := readBack(t, im, 66560, 2*cs-66560); !bytes.Equal(got, make([]byte, len(got))) {
			t.Fatalf("xl2=%v: the old tail reads %#x after growing", xl2, got[0])
		}
		if got := readBack(t, im, cs, 1024); !bytes.Equal(got, bytes.Repeat([]byte{0xdd}, 1024)) {
			t.Fatalf("xl2=%v: data below the old end lost", xl2)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		ownCheck(t, p)
		testkit.QemuCheck(t, p)
	}
}

// Sanity (expected to pass): a queued allocating write past the new end,
// planned before the Shrink and held at the device: the discard waits
// for its registration; growing again shows zeros.
func TestRegress_ShrinkWaitsForQueueAllocator(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, 4096), 40<<20+cs) // caches the L2 slice
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{0xaa}, cs)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(a[:64])})
	alloc := im.c.queueAlloc.Load()
	if err := q.Submit(&block.Req{Op: block.OpWrite, Off: 40 << 20, Buf: a}); err != nil {
		t.Fatal(err)
	}
	if im.c.queueAlloc.Load() == alloc {
		t.Fatal("not the allocator")
	}
	if !h.Wait(holdTimeout) {
		t.Fatal("the allocator's write never reached the device")
	}
	s := async(func() error { return im.Shrink(32 << 20) })
	sBlocked := blocked(s, 100*time.Millisecond)
	h.Release()
	if !sBlocked {
		t.Log("Shrink did not wait")
	}
	waitErr(t, s, "shrink")
	waitQueued(t, q, "the queued write")
	if err := im.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, im, 40<<20, cs); !bytes.Equal(got, make([]byte, cs)) {
		t.Fatalf("past the shrunken end reads %#x after growing again", got[0])
	}
	checkClean(t, im, r.mem)
}
