package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
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
	rng := rand.New(rand.NewPCG(3, 4))
	var clones []*memdev.Dev
	crash := func() {
		for range 4 {
			clones = append(clones, mem.CrashClone(rng, 0.7))
		}
		clones = append(clones, mem.CrashClone(rng, 1))
	}
	dev.mu.Lock()
	dev.before = crash
	dev.mu.Unlock()
	neu := bytes.Repeat([]byte{0x5b}, int(cs))
	mustWrite(t, im, neu, 4*cs)
	dev.mu.Lock()
	dev.before = func() {}
	dev.mu.Unlock()
	crash()
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
	for i, c := range clones {
		im2, err := OpenDevice(c, Options{})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		got := make([]byte, cs)
		if _, err := im2.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if err := im2.Close(); err != nil {
			t.Fatal(err)
		}
		for s := int64(0); s < cs; s += 512 {
			g := got[s : s+512]
			if !bytes.Equal(g, old[:512]) && !bytes.Equal(g, make([]byte, 512)) {
				t.Fatalf("clone %d: the discarded cluster's sector %d reads %#x: neither its flushed bytes nor zeros (the new owner's)", i, s/512, g[0])
			}
		}
	}
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
			rng := rand.New(rand.NewPCG(5, 6))
			var clones []*memdev.Dev
			crash := func() {
				for range 4 {
					clones = append(clones, mem.CrashClone(rng, 0.7))
				}
				clones = append(clones, mem.CrashClone(rng, 1))
			}
			dev.mu.Lock()
			dev.before = crash
			dev.mu.Unlock()
			neu := bytes.Repeat([]byte{0x5b}, cs)
			mustWrite(t, im, neu, 4*cs)
			dev.mu.Lock()
			dev.before = func() {}
			dev.mu.Unlock()
			crash()
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			want := bytes.Clone(old)
			copy(want[512:], part)
			for i, c := range clones {
				im2, err := OpenDevice(c, Options{})
				if err != nil {
					t.Fatalf("clone %d: %v", i, err)
				}
				got := make([]byte, cs)
				if _, err := im2.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				if err := im2.Close(); err != nil {
					t.Fatal(err)
				}
				for s := 0; s < cs; s += 512 {
					if g := got[s : s+512]; !bytes.Equal(g, old[s:s+512]) && !bytes.Equal(g, want[s:s+512]) {
						t.Fatalf("clone %d: sector %d reads %#x: neither its flushed bytes nor the write's", i, s/512, g[0])
					}
				}
			}
		})
	}
}

// failOnceNearDev runs hook (once, armed) before the first Writev that
// touches [lo, hi), and fails that write; before, if set, runs before
// every write, zeroing and flush (crash clones).
type failOnceNearDev struct {
	*memdev.Dev
	mu     sync.Mutex
	armed  bool
	lo, hi int64
	hook   func()
	before func()
}

func (d *failOnceNearDev) pre() {
	d.mu.Lock()
	b := d.before
	d.mu.Unlock()
	if b != nil {
		b()
	}
}

func (d *failOnceNearDev) Writev(off int64, b [][]byte) error {
	n := int64(0)
	for _, x := range b {
		n += int64(len(x))
	}
	d.mu.Lock()
	fire := d.armed && off < d.hi && off+n > d.lo
	if fire {
		d.armed = false
	}
	d.mu.Unlock()
	if fire {
		d.hook()
		return errors.New("injected EIO")
	}
	d.pre()
	return d.Dev.Writev(off, b)
}

func (d *failOnceNearDev) WriteZeroes(off, n int64, f block.Flags) error {
	d.pre()
	return d.Dev.WriteZeroes(off, n, f)
}

func (d *failOnceNearDev) Flush() error {
	d.pre()
	return d.Dev.Flush()
}

func (d *failOnceNearDev) Close() error { return nil }

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
	dev := &failOnceNearDev{Dev: mem}
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
	dev.mu.Lock()
	dev.armed, dev.lo, dev.hi = true, x, x+cs
	dev.hook = func() {
		if err := im.Discard(0, cs); err != nil {
			t.Errorf("discard: %v", err)
		}
	}
	dev.mu.Unlock()
	if err := im.WriteCompressed(cs, bytes.Repeat([]byte{0x66}, cs)); err == nil {
		t.Fatal("the injected failure did not fail the compressed write")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var clones []*memdev.Dev
	crash := func() {
		for range 4 {
			clones = append(clones, mem.CrashClone(rng, 0.7))
		}
		clones = append(clones, mem.CrashClone(rng, 1))
	}
	dev.mu.Lock()
	dev.before = crash
	dev.mu.Unlock()
	neu := bytes.Repeat([]byte{0x5b}, cs)
	mustWrite(t, im, neu, 4*cs)
	dev.mu.Lock()
	dev.before = nil
	dev.mu.Unlock()
	crash()
	im.mu.Lock()
	en, _ := im.entry(4 * cs)
	im.mu.Unlock()
	t.Logf("A's cluster %#x, new owner's cluster %#x, %d clones", x, int64(en.Offset()), len(clones))
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	bad := 0
	for i, c := range clones {
		im2, err := OpenDevice(c, Options{})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		got := make([]byte, cs)
		_, rerr := im2.ReadAt(got, 0)
		im2.Close()
		if rerr != nil {
			if bad++; bad < 3 {
				t.Errorf("clone %d: the discarded guest cluster fails to read: %v", i, rerr)
			}
			continue
		}
		if !bytes.Equal(got, a) && !bytes.Equal(got, make([]byte, cs)) {
			if bad++; bad < 3 {
				t.Errorf("clone %d: the discarded guest cluster reads %#x..., neither its data nor zeros", i, got[0])
			}
		}
	}
}
