package qcow2

import (
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Review 46, found by TestReview46_QueueCrashUnflushedOldOrNew: with
// extended L2, a write into a kept cluster (COPIED, some subclusters
// allocated) that begins in a subcluster reading as zeros and runs on
// over allocated subclusters took the preallocation's way for the COW
// range, one efficient zeroing of [from, to) and then the data
// (zeroThenWrite). That range covers the allocated subclusters the data
// overwrites, live ones, still linked: their bytes were zeros between the
// two requests, for a lock-free read, and after a crash there (flushed
// data read back as zeros, neither the old nor the new bytes).

// r46KeepImage makes the cluster at guest 0 of a 32 KiB-cluster extended
// L2 image allocated, its first 8 KiB (8 subclusters) zero subclusters
// and the rest data, flushed; it returns the data.
func r46KeepImage(t *testing.T, dev block.Device) (*Image, []byte) {
	t.Helper()
	if err := CreateDevice(dev, CreateOptions{Size: 1 << 20, ClusterSize: 32 << 10, ExtendedL2: true}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := r46Data(2, 0, 32<<10)
	if _, err := im.WriteAt(old, 0); err != nil {
		t.Fatal(err)
	}
	if err := im.WriteZeroes(0, 8<<10, 0); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	clear(old[:8<<10])
	e, bm, err := im.xentry(0)
	if err != nil || e.Type() != format.ClusterNormal || !e.Copied() || uint32(bm) != 0xffffff00 {
		t.Fatalf("setup: entry %#x bitmap %#x, %v", uint64(e), bm, err)
	}
	return im, old
}

// r46KeepWrite is the write under test: from inside the last zero
// subcluster over every allocated one.
const r46KeepOff, r46KeepLen = 8<<10 - 512, 24<<10 + 512

// TestReview46_XL2KeepZeroingCrash crashes at every device op of the
// write: the allocated subclusters it overwrites must read their old or
// their new bytes, sector by sector.
func TestReview46_XL2KeepZeroingCrash(t *testing.T) {
	t.Parallel()
	mem := memdev.New(memdev.Options{})
	h := &hookDev{Dev: mem, before: func() {}}
	im, old := r46KeepImage(t, h)
	defer im.Close()
	rng := rand.New(rand.NewPCG(46, 1))
	var clones []*memdev.Dev
	h.mu.Lock()
	h.before = func() {
		clones = append(clones, mem.CrashClone(rng, 1), mem.CrashClone(rng, 0.5))
	}
	h.mu.Unlock()
	nw := r46Data(3, r46KeepOff, r46KeepLen)
	if _, err := im.WriteAt(nw, r46KeepOff); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.before = func() {}
	h.mu.Unlock()
	got := make([]byte, 32<<10)
	if _, err := im.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if i := testkit.FirstDiff(got[r46KeepOff:], nw); i >= 0 || testkit.FirstDiff(got[:r46KeepOff], old[:r46KeepOff]) >= 0 {
		t.Fatalf("the cluster does not read back after the write (first difference in the write at %d)", i)
	}
	checkClean(t, im, mem)                               // our Check and qemu-img check
	if _, err := exec.LookPath("qemu-img"); err == nil { // QEMU reads what we read
		p := filepath.Join(t.TempDir(), "keep.qcow2")
		if err := mem.WriteFile(p); err != nil {
			t.Fatal(err)
		}
		if i := testkit.FirstDiff(qemuRaw(t, p)[:32<<10], got); i >= 0 {
			t.Fatalf("qemu-img convert reads the cluster otherwise at %d", i)
		}
	}
	for k, c := range clones {
		cim, err := OpenDevice(c, Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("clone %d: %v", k, err)
		}
		got := make([]byte, 32<<10)
		if _, err := cim.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		cim.Close()
		for s := int64(8 << 10); s < 32<<10; s += crashSector {
			g := got[s : s+crashSector]
			if testkit.FirstDiff(g, old[s:s+crashSector]) >= 0 && testkit.FirstDiff(g, nw[s-r46KeepOff:s-r46KeepOff+crashSector]) >= 0 {
				t.Fatalf("clone %d (of %d): allocated sector at %d reads neither its old nor its new bytes: % x", k, len(clones), s, g[:16])
			}
		}
		// Each clone (a few: two per device op of the write) goes
		// through qemu-img check too, as the crash left it (leaks
		// allowed) and after the engine's leak repair (clean).
		if testkit.HaveQemu() && (!qemuCheckCrash(t, k, c, Options{}, false) || !qemuCheckRepaired(t, k, c, Options{})) {
			t.FailNow()
		}
	}
	t.Logf("%d clones", len(clones))
}

// r46ReadDev runs before, once, ahead of the first write (Writev) into
// [lo, hi).
type r46ReadDev struct {
	*memdev.Dev
	lo, hi int64
	before func()
}

func (d *r46ReadDev) Writev(off int64, b [][]byte) error {
	if f := d.before; f != nil && off < d.hi && off+block.VecLen(b) > d.lo {
		d.before = nil
		f()
	}
	return d.Dev.Writev(off, b)
}

// TestReview46_XL2KeepZeroingRead reads the allocated subclusters the
// write overwrites just before the first write into them goes to the
// device (after the zeroing, before the fix): the read must see their old
// bytes (the write has not landed), not zeros.
func TestReview46_XL2KeepZeroingRead(t *testing.T) {
	t.Parallel()
	d := &r46ReadDev{Dev: memdev.New(memdev.Options{})}
	im, old := r46KeepImage(t, d)
	defer im.Close()
	e, _, err := im.xentry(0)
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	var rerr error
	d.lo, d.hi = int64(e.Offset())+8<<10, int64(e.Offset())+32<<10
	d.before = func() {
		got = make([]byte, 16<<10)
		_, rerr = im.ReadAt(got, 16<<10)
	}
	if _, err := im.WriteAt(r46Data(3, r46KeepOff, r46KeepLen), r46KeepOff); err != nil {
		t.Fatal(err)
	}
	if got == nil {
		t.Fatal("the data write was not seen")
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	if i := testkit.FirstDiff(got, old[16<<10:]); i >= 0 {
		t.Fatalf("a read racing the write saw bytes the disk never held at %d: % x (old % x)", 16<<10+i, got[i:i+16], old[16<<10+i:16<<10+i+16])
	}
	checkClean(t, im, d.Dev)
}
