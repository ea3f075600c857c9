package qcow2

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// With lazy refcounts, a write that filled a whole cluster kept
// preallocated by an earlier zeroing (a ZeroAlloc entry: its host
// cluster still holds the bytes from before the zeroing) was linked
// with nothing ordering its data before the L2 entry: no COW bytes (no
// flush, Q2), not fresh space (no flush for lazy refcounts), and no
// refcount dependency (lazy). The Flush that wrote the table could then
// be cut by a power loss after the table and before the data: the
// guest cluster read the bytes the zeroing had replaced, though the
// zeroing was flushed (found by TestAdminCrashClones/expand-zero-
// backing-lazy once ExpandZeroClusters wrote such clusters). The same
// held for any lazy allocation into space that is not fresh (stale
// bytes of another cluster). With lazy refcounts every link now waits
// for a flush of its data.
func TestRegress_LazyLinkAfterData(t *testing.T) {
	const cs = 4096
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20, LazyRefcounts: true}); err != nil {
		t.Fatal(err)
	}
	dev := &hookDev{Dev: mem, before: func() {}}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0xee}, cs)
	mustWrite(t, im, old, 0)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := im.WriteZeroes(0, cs, 0); err != nil { // keeps the host cluster
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	neu := bytes.Repeat([]byte{0x5a}, cs)
	mustWrite(t, im, neu, 0) // the whole cluster: no COW bytes
	rng := rand.New(rand.NewPCG(1, 2))
	var clones []*memdev.Dev
	dev.mu.Lock()
	dev.before = func() {
		for range 16 {
			clones = append(clones, mem.CrashClone(rng, 0.5))
		}
	}
	dev.mu.Unlock()
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	dev.mu.Lock()
	dev.before = func() {}
	dev.mu.Unlock()
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, writeDev(t, mem))
	qemu := 0
	for i, c := range clones {
		// Every crashQemuEvery-th clone goes through qemu-img check
		// too, as the crash left it (leaks allowed; not when dirty,
		// qemuCheckCrash) and after the engine's recovery and leak
		// repair (clean).
		sample := i%crashQemuEvery == 0 && testkit.HaveQemu()
		if sample && !qemuCheckCrash(t, i, c, Options{}, false) {
			t.FailNow()
		}
		im2, err := OpenDevice(c, Options{})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		got := make([]byte, cs)
		if _, err := im2.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		im2.Close()
		for s := 0; s < cs; s += 512 {
			g := got[s : s+512]
			if !bytes.Equal(g, make([]byte, 512)) && !bytes.Equal(g, neu[:512]) {
				t.Fatalf("clone %d: sector %d reads %#x: neither the flushed zeros nor the new data", i, s/512, g[0])
			}
		}
		if sample {
			qemu++
			if !qemuCheckRepaired(t, i, c, Options{}) {
				t.FailNow()
			}
		}
	}
	t.Logf("%d clones, %d of them through qemu-img check", len(clones), qemu)
}
