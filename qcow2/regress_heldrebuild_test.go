package qcow2

import (
	"bytes"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/internal/testkit"
)

// A cluster held until the data gate passes (Q12, held.go: a read R in
// flight found it) lies in a range that a refcount structure rebuild
// (SetRefcountBits) leaves without a refcount block, since every count
// in that range is 0. findFree took an uncovered range as wholly free
// without asking isHeld, so the next allocation handed the held cluster
// out (the range's own new refcount block) while R was still reading
// it, and R returned the new owner's bytes (review 53).
func TestRegress_RebuildKeepsHeldClustersFromReads(t *testing.T) {
	const cs = 512
	r := newHoldRig(t, CreateOptions{ClusterSize: cs, Size: 256 << 10}, Options{PreallocSize: -1})
	im := r.im
	const n = 128 // guest clusters written before the snapshot
	for i := int64(0); i < n; i++ {
		mustWrite(t, im, bytes.Repeat([]byte{byte(i) | 0x80}, cs), i*cs)
	}
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	// Pick a guest cluster whose host cluster lies in 64-bit range 1
	// (host clusters 64..127 with 512-byte clusters).
	var gx, hx int64 = -1, -1
	for i := int64(0); i < n; i++ {
		h := hostOf(t, im, i*cs)
		if h/cs == 64 {
			gx, hx = i, h
			break
		}
	}
	if gx < 0 {
		t.Fatal("no guest cluster in host range 1")
	}
	t.Logf("R reads guest cluster %d at host cluster %d", gx, hx/cs)
	old := readBack(t, im, gx*cs, cs)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Read, Off: hx, End: hx + cs})
	buf := make([]byte, cs)
	rdone := async(func() error { _, err := im.ReadAt(buf, gx*cs); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("R never reached the device")
	}
	// The active image copies every cluster away from the snapshot ...
	for i := int64(0); i < n; i++ {
		mustWrite(t, im, bytes.Repeat([]byte{byte(i) | 0x40}, cs), i*cs)
	}
	// ... whose deletion drops the old ones to 0: held, R is in the gate.
	if err := im.DeleteSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	heldX := im.isHeld(uint64(hx / cs))
	var inUse []uint64
	for c := uint64(64); c < 128; c++ {
		rc, _ := im.refcount(c)
		if rc != 0 {
			inUse = append(inUse, c)
		}
	}
	im.mu.Unlock()
	if !heldX {
		t.Fatal("setup: X is not held")
	}
	if len(inUse) != 0 {
		t.Fatalf("setup: clusters in range 1 still in use: %v", inUse)
	}
	if err := im.SetRefcountBits(64); err != nil {
		t.Fatal(err)
	}
	// New data into fresh guest clusters.
	x := bytes.Repeat([]byte{0x22}, cs)
	var hit int64 = -1
	for i := int64(n); i < 2*n; i++ {
		mustWrite(t, im, x, i*cs)
		if hostOf(t, im, i*cs) == hx {
			hit = i
			break
		}
	}
	im.mu.Lock()
	rt1 := im.reftable[1]
	im.mu.Unlock()
	if int64(rt1) == hx {
		t.Errorf("the new refcount block of range 1 went into held cluster %d, which R (in the data gate) is still reading", hx/cs)
	}
	if hit >= 0 {
		t.Errorf("guest cluster %d was given host cluster %d while R (guest %d) was still reading it (held)", hit, hx/cs, gx)
	}
	h.Release()
	waitErr(t, rdone, "R")
	if !bytes.Equal(buf, old) {
		t.Errorf("R of guest cluster %d returned %#x..., want %#x...: another guest cluster's bytes", gx, buf[0], old[0])
	}
}

// The same with a lock-free overwrite W in flight: ApplySnapshot drops
// W's cluster X to 0 and holds it (Q12: W may still land there);
// SetRefcountBits leaves X's range without a block, the next allocation
// puts the range's new refcount block in X, and W lands on it. After a
// crash following a completed Flush the image's refcounts are W's bytes:
// clusters in use counted 0.
func TestRegress_RebuildKeepsHeldClustersFromWrites(t *testing.T) {
	const cs = 512
	r := newHoldRig(t, CreateOptions{ClusterSize: cs, Size: 256 << 10}, Options{PreallocSize: -1})
	im := r.im
	if _, err := im.CreateSnapshot("s"); err != nil { // of the empty disk
		t.Fatal(err)
	}
	const n = 128
	for i := int64(0); i < n; i++ {
		mustWrite(t, im, bytes.Repeat([]byte{byte(i) | 0x80}, cs), i*cs)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	var gx, hx int64 = -1, -1
	for i := int64(0); i < n; i++ {
		if h := hostOf(t, im, i*cs); h/cs == 64 {
			gx, hx = i, h
			break
		}
	}
	if gx < 0 {
		t.Fatal("no guest cluster at host cluster 64")
	}
	// W: an in-place overwrite of guest cluster gx (COPIED), held at the
	// device inside the data gate.
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Off: hx, End: hx + cs})
	wdone := async(func() error { _, err := im.WriteAt(make([]byte, cs), gx*cs); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("W never reached the device")
	}
	if err := im.ApplySnapshot("s"); err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	heldX := im.isHeld(uint64(hx / cs))
	im.mu.Unlock()
	if !heldX {
		t.Fatal("setup: X is not held")
	}
	if err := im.SetRefcountBits(64); err != nil {
		t.Fatal(err)
	}
	x := bytes.Repeat([]byte{0x22}, cs)
	for i := int64(0); i < 4; i++ {
		mustWrite(t, im, x, (n+i)*cs)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	rt1 := im.reftable[1]
	im.mu.Unlock()
	if int64(rt1) == hx {
		t.Errorf("the refcount block of range 1 was placed in held cluster %d, which W (in the gate) still writes", hx/cs)
	}
	h.Release()
	waitErr(t, wdone, "W")
	// W's call returned: a Flush makes it durable. Power cut then.
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	clone := r.mem.CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
	if testkit.HaveQemu() {
		path := filepath.Join(t.TempDir(), "c.qcow2")
		if err := clone.WriteFile(path); err != nil {
			t.Fatal(err)
		}
		if err := testkit.QemuCheckReport(path, testkit.QemuCheckResult.NoCorruption); err != nil {
			t.Errorf("qemu-img check after crash: %v", err)
		}
	}
	ci, err := OpenDevice(clone, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer ci.Close()
	res, err := ci.Check(CheckOptions{})
	if err != nil || res.Corruptions != 0 || res.CheckErrors != 0 {
		t.Errorf("check after crash: err=%v corruptions=%d errors=%d %v", err, res.Corruptions, res.CheckErrors, head(res.Messages, 4))
	}
	for i := int64(0); i < 4; i++ {
		if got := readBack(t, ci, (n+i)*cs, cs); !bytes.Equal(got, x) {
			t.Errorf("guest cluster %d lost after crash", n+i)
		}
	}
}
