package qcow2

// Found by a second review of the resize change (Q18); each test failed
// on the code before its fix, and its comment describes that failure.

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// a Discard that passed its size check before a Shrink's cut runs
// zeroClusterLocked in the window, where goff >= vsize makes it a "full"
// discard (unallocated). The Shrink is then refused (ErrResizeBusy) and
// restores the size: the discarded clusters, inside the size again, read
// the backing file instead of zeros (v3 with a backing file: a discard
// makes zero clusters).
func TestRegress_RefusedShrinkDiscardStaysZero(t *testing.T) {
	const cs = 64 << 10
	const newSize = 1 << 20
	const X = newSize + cs // past the new end
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
	im, err := Open(p, Options{PreallocSize: -1, Opener: func(path string, ro bool) (block.Device, error) {
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

	// W1: allocating write of cluster X, held at the device (registered, Q7).
	a := bytes.Repeat([]byte{0xaa}, cs)
	h1 := hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(a[:64])})
	w1 := async(func() error { _, err := im.WriteAt(a, X); return err })
	if !h1.Wait(holdTimeout) {
		t.Fatal("W1 never reached the device")
	}
	// W2: another write, held until the Shrink gave up (writers gate).
	b := bytes.Repeat([]byte{0xbb}, cs)
	h2 := hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(b[:64])})
	w2 := async(func() error { _, err := im.WriteAt(b, 0); return err })
	if !h2.Wait(holdTimeout) {
		t.Fatal("W2 never reached the device")
	}
	// D: passes its size check now (size 2 MiB), then waits for W1's
	// registration of X.
	d := async(func() error { return im.Discard(X, 4*cs) })
	if !blocked(d, 100*time.Millisecond) {
		t.Fatal("D did not wait for W1")
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
	h1.Release() // W1 links, D runs its clusters in the window
	waitErr(t, w1, "W1")
	serr := <-s
	h2.Release()
	waitErr(t, w2, "W2")
	waitErr(t, d, "D")
	if !errors.Is(serr, ErrResizeBusy) {
		t.Fatalf("Shrink: %v, want ErrResizeBusy", serr)
	}
	if n, _ := im.Size(); n != 2<<20 {
		t.Fatalf("size %d after the refused shrink", n)
	}
	if got := readBack(t, im, X, 4*cs); !bytes.Equal(got, make([]byte, 4*cs)) {
		t.Fatalf("acknowledged discard of [%#x, +%#x) reads %#x (the backing file), want zeros", X, 4*cs, got[0])
	}
}

// on a LUKS image, a partial-sector write that passed its size check
// before a Shrink's cut does its read-modify-write through Readv, which
// reads zeros past the cut size (mapRun uses vsize): it writes the zeros
// back over bytes past the cut. The Shrink is then refused
// (ErrResizeBusy, "changes nothing"), and those bytes, inside the size
// again, are lost.
func TestRegress_RefusedShrinkCryptRMWKeepsData(t *testing.T) {
	const cs = 64 << 10
	const C = 32 << 20      // the cluster that holds the new end
	const S = C + 4096      // the sector that holds the new end
	const newSize = S + 512 // whole sectors: an unaligned size is refused (checkSectorSize)
	r := newHoldRig(t, CreateOptions{ClusterSize: cs, Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte("p"), Iterations: 1000}},
		Options{PreallocSize: -1, Passphrase: []byte("p")})
	im := r.im
	im.idleWait = 300 * time.Millisecond
	c := bytes.Repeat([]byte{0xcc}, cs)
	mustWrite(t, im, c, C)
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), 0)
	stC, err := im.BlockStatus(C, cs)
	if err != nil || stC.HostOff < 0 {
		t.Fatalf("status: %+v %v", stC, err)
	}
	st0, err := im.BlockStatus(0, cs)
	if err != nil || st0.HostOff < 0 {
		t.Fatalf("status: %+v %v", st0, err)
	}
	hS := stC.HostOff + (S - C)
	// the sector writer: a whole-sector write of S (shared sector lock), held.
	h0 := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Off: hS, End: hS + 512})
	w0 := async(func() error { _, err := im.WriteAt(c[:512], S); return err })
	if !h0.Wait(holdTimeout) {
		t.Fatal("W0 never reached the device")
	}
	// W2: a write elsewhere, held until the Shrink gave up.
	h2 := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Off: st0.HostOff, End: st0.HostOff + 4096})
	w2 := async(func() error { _, err := im.WriteAt(make([]byte, 4096), 0); return err })
	if !h2.Wait(holdTimeout) {
		t.Fatal("W2 never reached the device")
	}
	// W: a partial-sector write inside S below the new end: checks the
	// size now, then waits for the sector writer's sector lock.
	e := bytes.Repeat([]byte{0xee}, 10)
	w := async(func() error { _, err := im.WriteAt(e, S+10); return err })
	if !blocked(w, 100*time.Millisecond) {
		t.Fatal("W did not wait for W0")
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
	h0.Release()
	waitErr(t, w0, "W0")
	waitErr(t, w, "W")
	serr := <-s
	h2.Release()
	waitErr(t, w2, "W2")
	if !errors.Is(serr, ErrResizeBusy) {
		t.Fatalf("Shrink: %v, want ErrResizeBusy", serr)
	}
	if n, _ := im.Size(); n != 64<<20 {
		t.Fatalf("size %d after the refused shrink", n)
	}
	if got := readBack(t, im, S+20, 512-20); !bytes.Equal(got[:newSize-S-20], c[:newSize-S-20]) {
		t.Fatal("W's own sector neighbours below the new end changed")
	}
	if got := readBack(t, im, newSize, S+512-newSize); !bytes.Equal(got, c[:len(got)]) {
		t.Fatalf("after a refused Shrink, [new end, sector end) reads %#x, want 0xcc (a write there never happened)", got[0])
	}
}

// the L1 entry write for a new L2 table T fails after landing
// (e9b1565 keeps T allocated for this reason). Memory still says the
// entry is empty, so a Check with leak repair on the live image frees T;
// the next allocation gets T for guest data; the flushed data is then
// what the media's L1 entry names as an L2 table: after a crash the
// image is corrupt.
func TestRegress_FailedL1EntryThenRepairIsClean(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	d := &landedFailDev{Device: mem}
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, 4096), 0) // L1 entry 0
	h := im.Header()
	d.off.Store(int64(h.L1TableOffset))
	d.end.Store(int64(h.L1TableOffset) + int64(h.L1Size)*8)
	d.armed.Store(true)
	if _, err := im.WriteAt(bytes.Repeat([]byte{0x22}, 4096), 600<<20); err == nil { // L1 entry 1
		t.Fatal("write succeeded despite the failed L1 entry write")
	}
	// Now the image refuses writes (Q4), and so a repair.
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	switch {
	case errors.Is(err, ErrReadOnly):
	case err != nil:
		t.Fatalf("check -r leaks: %v", err)
	default:
		t.Logf("repair: leaks fixed %d: %v", r.LeaksFixed, head(r.Messages, 4))
	}
	// Guest data into the lowest free cluster: T if the repair freed it.
	data := bytes.Repeat([]byte{0x80, 0, 0, 0, 0, 0, 0x10, 0x00}, cs/8) // L2 entries: COPIED, host 1 MiB
	acked := true
	if _, err := im.WriteAt(data, cs); errors.Is(err, ErrWritesLost) {
		acked = false
	} else if err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil && !errors.Is(err, ErrWritesLost) {
		t.Fatal(err)
	}
	// Crash: open what the media holds.
	im2, err := OpenDevice(memdev.FromBytes(mem.Bytes(), memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer im2.Close()
	if got := readBack(t, im2, cs, cs); acked && !bytes.Equal(got, data) {
		t.Fatal("flushed data lost")
	}
	mustNoCorruption(t, im2)
	got := make([]byte, 4096)
	if _, err := im2.ReadAt(got, 600<<20); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("never-acknowledged range reads %#x (%v)", got[0], err)
	}
}

// (Now refused with ErrResizeBusy.) SetVersion took resizeMu. A queue's owner with a fast read
// unreaped calls it (SetVersion is not in block A3's list of methods
// that wait for the owner's requests) while a Shrink holds resizeMu and
// waits, unbounded, in its discard's freeAfterWriters gate.sync for that
// read: neither ever returns. Before 13b059a SetVersion took mu only.
func TestRegress_SetVersionFromQueueOwnerBesideShrink(t *testing.T) {
	const cs = 64 << 10
	const C = 32 << 20
	const newSize = C + 4096
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	im.idleWait = 300 * time.Millisecond
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), 0)
	mustWrite(t, im, bytes.Repeat([]byte{0xcc}, cs), C)
	mustWrite(t, im, bytes.Repeat([]byte{0xdd}, cs), 40<<20) // freed by the Shrink (gate sync)
	stC, err := im.BlockStatus(C, cs)
	if err != nil || stC.HostOff < 0 {
		t.Fatal(stC, err)
	}
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	// Hold the Shrink at its tail zeroing (after its bounded waits).
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite | holddev.Zero, Off: stC.HostOff + 4096, End: stC.HostOff + cs})
	s := async(func() error { return im.Shrink(newSize) })
	if !h.Wait(holdTimeout) {
		t.Fatal("the tail zeroing never reached the device")
	}
	// The owner reads (fast path: enters the data gate until reaped).
	fast := im.c.queueFast.Load()
	rq := &block.Req{Op: block.OpRead, Off: 0, Buf: make([]byte, 4096)}
	if err := q.Submit(rq); err != nil {
		t.Fatal(err)
	}
	if im.c.queueFast.Load() == fast {
		t.Fatal("the read did not take the fast path")
	}
	h.Release()
	// The owner, its read unreaped, downgrades/upgrades the header.
	sv := async(func() error { return im.SetVersion(3) })
	var svErr error
	dead := false
	select {
	case svErr = <-sv:
	case <-time.After(10 * time.Second):
		dead = true
	}
	// Unblock from here (as the owner would once SetVersion returned).
	out := make([]*block.Req, 1)
	if _, err := q.Wait(out, 1); err != nil {
		t.Fatal(err)
	}
	waitErr(t, s, "shrink")
	if dead {
		waitErr(t, sv, "SetVersion")
	} else if svErr != nil && !errors.Is(svErr, ErrResizeBusy) {
		t.Fatal(svErr)
	}
	q.Close()
	if dead {
		t.Fatal("SetVersion by a queue owner with a read unreaped blocked on resizeMu behind a Shrink waiting for that read (deadlock)")
	}
}
