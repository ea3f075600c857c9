package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// A host cluster freed by a Discard or an unmapping zeroing was handed
// to the next allocation at once, while the L2 change that dropped its
// last reference was still only in the cache. The new owner's data
// write reached the media before that change did: a power loss then
// left the old entry, on the media, pointing at the new owner's bytes,
// and the discarded guest cluster read data it never held (found by
// TestTorture_Compressed with lazy refcounts and a backing file, seed
// 1796356720962841426). Such a cluster is now held until a completed
// flush has made the change durable (Q3), as a compressed one was
// (Q13).
func TestRegress_FreedClusterNotReusedBeforeFlush(t *testing.T) {
	const cs = 4096
	for _, lazy := range []bool{false, true} {
		for _, keepHost := range []bool{false, true} {
			for _, how := range []string{"discard", "zero-unmap"} {
				name := fmt.Sprintf("%s-lazy=%v-nopassdiscard=%v", how, lazy, keepHost)
				t.Run(name, func(t *testing.T) {
					testFreedNotReused(t, cs, lazy, keepHost, how)
				})
			}
		}
	}
}

func testFreedNotReused(t *testing.T, cs int64, lazy, keepHost bool, how string) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: int(cs), Size: 1 << 20, LazyRefcounts: lazy}); err != nil {
		t.Fatal(err)
	}
	dev := &hookDev{Dev: mem, before: func() {}}
	im, err := OpenDevice(dev, Options{NoPassDiscard: keepHost})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0xa1}, int(cs))
	mustWrite(t, im, old, 0)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	switch how {
	case "discard":
		err = im.Discard(0, cs)
	default:
		err = im.WriteZeroes(0, cs, block.MayUnmap)
	}
	if err != nil {
		t.Fatal(err)
	}
	// A new cluster, written whole: first-fit would take the one just
	// freed. Power is lost before each device request it makes, and
	// after it: every write since the last flush may or may not have
	// landed, each on its own.
	cc := newCrashClones(mem, 3)
	neu := bytes.Repeat([]byte{0x5b}, int(cs))
	cc.during(dev, func() { mustWrite(t, im, neu, 4*cs) })
	// After a flush the freed cluster is given out again (no leak).
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	size, _ := mem.Size()
	mustWrite(t, im, neu, 8*cs)
	mustWrite(t, im, neu, 12*cs)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, _ := mem.Size(); got > size+cs {
		t.Errorf("the freed cluster was not reused after a flush: the file grew from %d to %d bytes for two clusters", size, got)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cc.expect(t, 0, cs, "the discarded cluster", old, make([]byte, cs))
}

// The same for a cluster an allocating write replaced: a cluster whose
// entry lost its COPIED flag (a crash inside a snapshot delete leaves
// that) is copied by the next write into it, and the old one, its
// refcount now 0, was held only until the data gate had passed; any
// Discard then gave it out again before the new link was durable.
func TestRegress_ReplacedClusterNotReusedBeforeFlush(t *testing.T) {
	const cs = 4096
	for _, lazy := range []bool{false, true} {
		t.Run(fmt.Sprintf("lazy=%v", lazy), func(t *testing.T) {
			mem := memdev.New(memdev.Options{})
			if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20, LazyRefcounts: lazy}); err != nil {
				t.Fatal(err)
			}
			dev := &hookDev{Dev: mem, before: func() {}}
			im, err := OpenDevice(dev, Options{NoPassDiscard: true})
			if err != nil {
				t.Fatal(err)
			}
			old := bytes.Repeat([]byte{0xa1}, cs)
			mustWrite(t, im, old, 0)
			if err := im.WriteCompressed(8*cs, bytes.Repeat([]byte{0x77}, cs)); err != nil {
				t.Fatal(err)
			}
			im.mu.Lock()
			e, err := im.entry(0)
			if err == nil {
				err = im.setEntry(0, format.MakeL2(e.Offset(), false, false)) // COPIED lost
			}
			im.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			part := bytes.Repeat([]byte{0x3c}, 512)
			mustWrite(t, im, part, 512) // copies the cluster, frees the old one
			if err := im.Discard(8*cs, cs); err != nil {
				t.Fatal(err)
			}
			cc := newCrashClones(mem, 5)
			neu := bytes.Repeat([]byte{0x5b}, cs)
			cc.during(dev, func() { mustWrite(t, im, neu, 4*cs) })
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(old)
			copy(want[512:], part)
			cc.expect(t, 0, cs, "the replaced cluster", old, want)
		})
	}
}

// failOnceNearDev runs onFire (once, armed) before the first Writev
// that touches [lo, hi), and fails that write.
type failOnceNearDev struct {
	*hookDev
	fmu    sync.Mutex
	armed  bool
	lo, hi int64
	onFire func()
}

func (d *failOnceNearDev) Writev(off int64, b [][]byte) error {
	n := int64(0)
	for _, x := range b {
		n += int64(len(x))
	}
	d.fmu.Lock()
	fire := d.armed && off < d.hi && off+n > d.lo
	if fire {
		d.armed = false
	}
	d.fmu.Unlock()
	if fire {
		d.onFire()
		return errors.New("injected EIO")
	}
	return d.hookDev.Writev(off, b)
}

// A host cluster shared by two compressed streams: the Discard of one
// dropped the count 2 -> 1 (not held: not 0), the failed write of the
// other dropped it 1 -> 0 through freeBytesLocked, which did not hold
// it, and the next allocation wrote there before the Discard's L2
// change was durable: after a crash the old compressed entry failed to
// decompress (found by a review of the fix above).
func TestRegress_CompressedSharedClusterNotReusedBeforeFlush(t *testing.T) {
	for _, lazy := range []bool{false, true} {
		t.Run(fmt.Sprintf("lazy=%v", lazy), func(t *testing.T) { testCompShared(t, lazy) })
	}
}

func testCompShared(t *testing.T, lazy bool) {
	const cs = 4096
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20, LazyRefcounts: lazy}); err != nil {
		t.Fatal(err)
	}
	dev := &failOnceNearDev{hookDev: &hookDev{Dev: mem, before: func() {}}}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{0x77}, cs)
	if err := im.WriteCompressed(0, a); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	ea, _ := im.entry(0)
	im.mu.Unlock()
	x := int64(ea.DecodeCompressed(&im.g).Off) &^ (cs - 1)
	dev.fmu.Lock()
	dev.armed, dev.lo, dev.hi = true, x, x+cs
	dev.onFire = func() {
		if err := im.Discard(0, cs); err != nil {
			t.Errorf("discard: %v", err)
		}
	}
	dev.fmu.Unlock()
	if err := im.WriteCompressed(cs, bytes.Repeat([]byte{0x66}, cs)); err == nil {
		t.Fatal("the injected failure did not fail the compressed write")
	}
	cc := newCrashClones(mem, 1)
	neu := bytes.Repeat([]byte{0x5b}, cs)
	cc.during(dev.hookDev, func() { mustWrite(t, im, neu, 4*cs) })
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	cc.expect(t, 0, cs, "the discarded compressed cluster", a, make([]byte, cs))
}

// crashClones collects crash clones of a memdev: at each take, four
// that keep each unflushed write with probability 0.7 and one that keeps
// them all.
type crashClones struct {
	mem    *memdev.Dev
	rng    *rand.Rand
	clones []*memdev.Dev
}

func newCrashClones(mem *memdev.Dev, seed uint64) *crashClones {
	return &crashClones{mem: mem, rng: rand.New(rand.NewPCG(seed, seed+1))}
}

func (c *crashClones) take() {
	for range 4 {
		c.clones = append(c.clones, c.mem.CrashClone(c.rng, 0.7))
	}
	c.clones = append(c.clones, c.mem.CrashClone(c.rng, 1))
}

// during takes clones before every device request fn makes (through
// dev's hook), and after it.
func (c *crashClones) during(dev *hookDev, fn func()) {
	dev.mu.Lock()
	dev.before = c.take
	dev.mu.Unlock()
	fn()
	dev.mu.Lock()
	dev.before = func() {}
	dev.mu.Unlock()
	c.take()
}

// expect opens every clone and fails t unless each sector of the
// cluster at guest offset off reads as that sector of one of allowed.
// Every clone goes through qemu-img check as well (qemuCheckClone).
func (c *crashClones) expect(t *testing.T, off, cs int64, what string, allowed ...[]byte) {
	t.Helper()
	for i, cl := range c.clones {
		before := cloneForQemu(cl)
		im, err := OpenDevice(cl, Options{})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		// After a crash: leaks allowed, corruption never (a COPIED
		// flag missing on a count of 1 is a test's own doing).
		if r, err := im.Check(CheckOptions{MaxMessages: 1 << 30}); err != nil || (r.Corruptions != 0 && !onlyMissingCopied(r.Messages)) {
			t.Fatalf("clone %d: check: %v %+v", i, err, r)
		}
		got := make([]byte, cs)
		_, rerr := im.ReadAt(got, off)
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		if rerr != nil {
			t.Fatalf("clone %d: %s fails to read: %v", i, what, rerr)
		}
		for s := int64(0); s < cs; s += 512 {
			ok := false
			for _, a := range allowed {
				ok = ok || bytes.Equal(got[s:s+512], a[s:s+512])
			}
			if !ok {
				t.Fatalf("clone %d: %s, sector %d, reads %#x: neither its flushed bytes nor a write's (a new owner's)", i, what, s/512, got[s])
			}
		}
		qemuCheckClone(t, i, before, cl)
	}
}

// cloneForQemu is a copy of a crash clone as it crashed (opening it
// changes it), for qemuCheckClone; nil without qemu-img.
func cloneForQemu(cl *memdev.Dev) *memdev.Dev {
	if !testkit.HaveQemu() {
		return nil
	}
	return cl.Clone()
}

// qemuCheckClone has qemu-img check find crash clone i as it crashed
// (before) without corruption, and after the engine's recovery and
// repair (cl, which it changes) clean (qemuCheckCrash,
// qemuCheckRepaired), and fails t otherwise. The tests here clear
// COPIED flags themselves: as our Check (onlyMissingCopied), qemu-img
// may report those flags missing on counts of 1, no other error; the
// repair is RepairAll. Every clone: these tests take a few dozen (well
// under a second of qemu-img). Without qemu-img (before nil) it does
// nothing.
func qemuCheckClone(t *testing.T, i int, before, cl *memdev.Dev) {
	t.Helper()
	if before == nil {
		return
	}
	if !qemuCheckCrashAlso(t, i, before, Options{}, false, qemuMissingCopiedOnly) || !qemuCheckRepairedMode(t, i, cl, Options{}, RepairAll) {
		t.FailNow()
	}
}

// A Discard whose flush fails leaks the clusters it dropped (their
// change may be off the media); a leak repair then freed them at once,
// and with the device's flushes failing from then on (B6), the next
// allocation wrote its data into one while the old entry could still be
// what the media held. A repaired leak was then held until a flush; but
// its lowered count could still reach the media before the removal
// (the cache writes the refcount block back at the next flush attempt,
// and a crash keeps any part of what was not flushed): a clone read
// the entry with count 0 (Q3; CI's invariants pass). The tables are
// now made durable before a count is lowered, or nothing is repaired.
func TestRegress_RepairedLeakNotReusedBeforeFlush(t *testing.T) {
	const cs = 4096
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	var dead atomic.Bool // every flush fails from then on (B6)
	ed := errordev.New(mem, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		if op == errordev.Flush && dead.Load() {
			return errordev.ErrInjectedEIO
		}
		return nil
	}), errordev.Options{})
	im, err := OpenDevice(ed, Options{NoPassDiscard: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	old := bytes.Repeat([]byte{0xa1}, cs)
	mustWrite(t, im, old, 0)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	dead.Store(true)
	if err := im.Discard(0, cs); err == nil {
		t.Fatal("the discard's flush did not fail")
	}
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	if err == nil || r == nil || r.Leaks == 0 || r.LeaksFixed != 0 {
		t.Fatalf("a leak repair with the flushes failing: %v %+v", err, r)
	}
	neu := bytes.Repeat([]byte{0x5b}, cs)
	mustWrite(t, im, neu, 4*cs)
	cc := newCrashClones(mem, 9)
	for range 4 {
		cc.take()
	}
	cc.expect(t, 0, cs, "the discarded cluster", old, make([]byte, cs))
}
