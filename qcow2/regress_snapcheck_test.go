package qcow2

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/holddev"
)

// Found in two reviews of the read gate (2026-11-30), each failing on the
// code before its fix.

// DeleteSnapshot dropped the references of clusters only the snapshot
// kept without regard for the data gate. A read R found guest cluster 0
// at H, shared with snapshot s; a write copied cluster 0 elsewhere (H:
// refcount 2 -> 1, not held), deleting s took H to 0, and the next
// allocation reused it under R. Now H is held until R has left.
func TestRegress_SnapshotDeleteHoldsClustersUnderReads(t *testing.T) {
	for _, queued := range []bool{false, true} {
		name := "sync"
		if queued {
			name = "queued"
		}
		t.Run(name, func(t *testing.T) {
			const cs = 64 << 10
			r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
			im := r.im
			old := bytes.Repeat([]byte{0x11}, cs)
			mustWrite(t, im, old, 0)
			if _, err := im.CreateSnapshot("s"); err != nil {
				t.Fatal(err)
			}
			host := hostOf(t, im, 0)
			finishR := startHeldRead(t, r, host, host+cs, queued)
			mustWrite(t, im, bytes.Repeat([]byte{0x33}, cs), 0) // copy-on-write: H 2 -> 1
			// H 1 -> 0. Bounded: a DeleteSnapshot that waited for the
			// gate would wait for the queued read, which this goroutine
			// (its owner) has not reaped.
			waitErr(t, async(func() error { return im.DeleteSnapshot("s") }), "delete snapshot")
			x := bytes.Repeat([]byte{0x22}, cs)
			for g := int64(5); g < 9; g++ {
				mustWrite(t, im, x, g*cs)
				if hostOf(t, im, g*cs) == host {
					t.Errorf("guest cluster %d was given H while R was still reading it", g)
				}
			}
			if buf := finishR(); !bytes.Equal(buf, old[:len(buf)]) {
				t.Fatalf("R of guest cluster 0 returned %#x, want 0x11", buf[0])
			}
			checkClean(t, im, r.mem)
		})
	}
}

// waitQueued reaps q's one request in flight, failing instead of hanging
// if it does not come, then closes q.
func waitQueued(t *testing.T, q block.Queue, what string) {
	t.Helper()
	waitErr(t, async(func() error {
		out := make([]*block.Req, 1)
		if _, err := q.Wait(out, 1); err != nil {
			return err
		}
		return out[0].Err
	}), what)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// Check with repair counted a cluster under allocation (refcount taken,
// not linked yet) as a leak and set its refcount to 0; the write then
// linked it, and the next allocation got the same cluster. Now a repair
// waits for allocations in flight.
func TestRegress_CheckRepairWaitsForAllocations(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	im.idleWait = holdTimeout                            // a loaded runner must not time the wait out
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), cs) // the L2 table exists
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{0xaa}, cs)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(a[:64])})
	w := async(func() error { _, err := im.WriteAt(a, 0); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("the write never reached the device")
	}
	c := async(func() error {
		res, err := im.Check(CheckOptions{Repair: RepairLeaks})
		if err == nil && (res.LeaksFixed != 0 || res.Corruptions != 0) {
			t.Errorf("check -r leaks beside the write: %d leaks fixed, %d corruptions: %v", res.LeaksFixed, res.Corruptions, res.Messages)
		}
		return err
	})
	cBlocked := blocked(c, 100*time.Millisecond)
	h.Release()
	waitErr(t, w, "write")
	if cBlocked {
		waitErr(t, c, "check")
	}
	if !cBlocked {
		t.Error("check -r did not wait for the allocation in flight")
	}
	b := bytes.Repeat([]byte{0xbb}, cs)
	mustWrite(t, im, b, 7*cs)
	if hostOf(t, im, 0) == hostOf(t, im, 7*cs) {
		t.Errorf("guest clusters 0 and 7 share host cluster %#x", hostOf(t, im, 0))
	}
	if got := readBack(t, im, 0, cs); !bytes.Equal(got, a) {
		t.Errorf("the acknowledged write to guest cluster 0 reads back %#x, want 0xaa", got[0])
	}
	checkClean(t, im, r.mem)
}

// SetVersion(2) scanned for zero clusters without mu, then rewrote the
// header: a discard of a cluster the scan had passed left a v2 image
// with a zero-flag entry, which no longer read. Now the scan runs under
// mu with the header change.
func TestRegress_DowngradeScanExcludesZeroing(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs, Size: 1 << 30}, Options{PreallocSize: -1})
	im := r.im
	h, sv := startHeldDowngrade(t, r, cs)
	d := async(func() error { return im.Discard(0, cs) }) // cluster 0: scanned already
	dBlocked := blocked(d, 200*time.Millisecond)          // it needs mu, which the scan holds
	h.Release()
	if dBlocked {
		waitErr(t, d, "discard")
	}
	if waitDowngrade(t, sv) {
		if v := im.Header().Version; v != 2 {
			t.Fatalf("version %d after the downgrade", v)
		}
	}
	buf := make([]byte, 512)
	if _, err := im.ReadAt(buf, 0); err != nil {
		t.Fatalf("guest cluster 0 after the downgrade: %v", err)
	}
	checkClean(t, im, r.mem)
}

// A downgraded image with lazy refcounts kept allocating as lazy, and
// marking it dirty failed (version 2 has no feature bits): every
// allocating write failed until reopen.
func TestRegress_DowngradeEndsLazyRefcounts(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs, LazyRefcounts: true}, Options{PreallocSize: -1})
	im := r.im
	if err := im.SetVersion(2); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0x44}, 4096), 0)
	checkClean(t, im, r.mem)
}

// CreateSnapshot waited for the data gate under mu: a queue owner with a
// request in flight that called the image (ReadAt takes mu for the size)
// waited for mu, and the snapshot for the owner's request. Now the
// snapshot syncs the gate before it takes mu.
func TestRegress_SnapshotDoesNotHoldMuForQueueOwners(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	im.idleWait = holdTimeout // a loaded runner must not time the snapshot out
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), 0)
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if err := q.Submit(&block.Req{Op: block.OpRead, Off: 0, Buf: buf}); err != nil {
		t.Fatal(err)
	}
	snap := async(func() error { _, err := im.CreateSnapshot("s"); return err })
	if !blocked(snap, 100*time.Millisecond) {
		t.Fatal("the snapshot did not wait for the owner's read")
	}
	// The owner, between Submit and Wait, asks the image for something.
	own := async(func() error {
		p := make([]byte, 512)
		_, err := im.ReadAt(p, cs)
		return err
	})
	dead := false
	select {
	case err := <-own:
		if err != nil {
			t.Fatalf("the owner's ReadAt: %v", err)
		}
	case <-time.After(10 * time.Second):
		dead = true
		t.Error("the owner's ReadAt waited for mu, held by CreateSnapshot waiting for the owner's own request")
	}
	waitQueued(t, q, "the queued read")
	waitErr(t, snap, "snapshot")
	if dead {
		waitErr(t, own, "the owner's ReadAt")
	}
	checkClean(t, im, r.mem)
}

// WriteZeroes and Discard read the header's size and version without mu
// while Truncate wrote them under it (go test -race finds it).
func TestRegress_ZeroingReadsHeaderMirrors(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	done := async(func() error {
		for range 50 {
			if err := im.Discard(0, cs); err != nil {
				return err
			}
			if err := im.WriteZeroes(cs, cs, block.MayUnmap); err != nil {
				return err
			}
		}
		return nil
	})
	caps := async(func() error { // Caps too (found in a third review)
		for range 200 {
			im.Caps()
		}
		return nil
	})
	for i := range 50 {
		if err := im.Truncate(int64(64<<20) + int64(i+1)*cs); err != nil {
			t.Fatal(err)
		}
		if err := im.SetLazyRefcounts(i%2 == 0); err != nil { // rewrites the header
			t.Fatal(err)
		}
	}
	waitErr(t, done, "zeroing")
	waitErr(t, caps, "caps")
	checkClean(t, im, r.mem)
}

// CreateSnapshot pauses overwrites: one in flight when it starts is
// waited for, and one that comes meanwhile copies the now shared cluster
// after it, so the snapshot keeps what the cluster held and the active
// image what was written.
func TestRegress_SnapshotPausesOverwrites(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	im.idleWait = holdTimeout // a loaded runner must not time the snapshot out
	old := bytes.Repeat([]byte{0x11}, cs)
	mustWrite(t, im, old, 0)
	w1 := bytes.Repeat([]byte{0x55}, 4096)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Fn: isData(w1)})
	wd := async(func() error { _, err := im.WriteAt(w1, 0); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("the overwrite never reached the device")
	}
	snap := async(func() error { _, err := im.CreateSnapshot("s"); return err })
	for deadline := time.Now().Add(holdTimeout); im.snapPause.Load() == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("CreateSnapshot never paused overwrites")
		}
	}
	if !blocked(snap, 100*time.Millisecond) {
		t.Fatal("CreateSnapshot did not wait for the overwrite in flight")
	}
	w2 := bytes.Repeat([]byte{0x66}, 4096)
	wd2 := async(func() error { _, err := im.WriteAt(w2, 8192); return err })
	if !blocked(wd2, 100*time.Millisecond) {
		t.Fatal("an overwrite went ahead while the snapshot paused them")
	}
	h.Release()
	waitErr(t, wd, "the first overwrite")
	waitErr(t, snap, "snapshot")
	waitErr(t, wd2, "the overwrite during the snapshot")
	want := append(append(append([]byte(nil), w1...), old[4096:8192]...), w2...)
	if got := readBack(t, im, 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("the active image lost a write")
	}
	if err := im.ApplySnapshot("s"); err != nil {
		t.Fatal(err)
	}
	want = append(append([]byte(nil), w1...), old[4096:]...)
	if got := readBack(t, im, 0, cs); !bytes.Equal(got, want) {
		t.Fatal("the snapshot does not hold the cluster as it was when taken")
	}
	checkClean(t, im, r.mem)
}

// Close did not wait for allocating writes running on other goroutines:
// one that committed after Close had flushed linked its cluster into a
// cache never written back, and was acknowledged, then lost. Now Close
// waits for them, as QEMU drains first.
func TestRegress_CloseWaitsForAllocatingWrites(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	im.idleWait = holdTimeout // a loaded runner must not time the wait out
	a := bytes.Repeat([]byte{0xaa}, 4096)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(a)})
	w := async(func() error { _, err := im.WriteAt(a, 3*cs); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("the write never reached the device")
	}
	c := async(im.Close)
	cBlocked := blocked(c, 100*time.Millisecond)
	if !cBlocked {
		t.Error("Close did not wait for the allocating write")
	}
	h.Release()
	var werr error
	select {
	case werr = <-w:
	case <-time.After(holdTimeout):
		t.Fatal("the write never returned")
	}
	if cBlocked {
		waitErr(t, c, "close")
	}
	r.im = nil
	im2, err := OpenDevice(r.mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	got := readBack(t, im2, 3*cs, len(a))
	if werr == nil && !bytes.Equal(got, a) {
		t.Fatalf("an acknowledged write reads %#x after Close and reopen", got[0])
	}
	mustClean(t, im2)
}

// From a third review. WriteZeroes read the version (3) lock-free, then
// waited for mu while a downgrade held it; once on version 2 its zeroing
// returned success having zeroed nothing. Now it writes zeros.
func TestRegress_WriteZeroesRacingDowngradeZeroes(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs, Size: 1 << 30}, Options{PreallocSize: -1})
	im := r.im
	h, sv := startHeldDowngrade(t, r, cs)
	z := async(func() error { return im.WriteZeroes(0, cs, 0) })
	zBlocked := blocked(z, 200*time.Millisecond) // it read version 3 and waits for mu
	h.Release()
	waitDowngrade(t, sv)
	if zBlocked {
		waitErr(t, z, "write zeroes")
	}
	if got := readBack(t, im, 0, cs); !bytes.Equal(got, make([]byte, cs)) {
		t.Fatalf("WriteZeroes succeeded, but guest cluster 0 reads %#x", got[0])
	}
	checkClean(t, im, r.mem)
}

// A writer that passed its lock-free checks before Close planned its
// allocation after it, and set the dirty bit of a cleanly closed image
// with lazy refcounts. Now planning refuses once the image is closed.
func TestRegress_NoPlanningAfterClose(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs, Size: 1 << 30, LazyRefcounts: true}, Options{PreallocSize: -1})
	im := r.im
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), 0) // the dirty bit is set
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Flush})
	c := async(im.Close)
	if !h.Wait(holdTimeout) {
		t.Fatal("Close never flushed")
	}
	w := async(func() error { _, err := im.WriteAt(bytes.Repeat([]byte{0x02}, 4096), 600<<20); return err })
	// It waits for mu, which Close holds, or is refused at once (Close
	// refuses writes before it flushes).
	returned := !blocked(w, 200*time.Millisecond)
	h.Release()
	waitErr(t, c, "close")
	if !returned {
		select {
		case <-w: // ErrClosed, or done before Close took mu
		case <-time.After(holdTimeout):
			t.Fatal("the write never returned")
		}
	}
	r.im = nil
	im2, err := OpenDevice(r.mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if f := im2.Header().IncompatibleFeatures; f != 0 {
		t.Fatalf("a cleanly closed image has incompatible features %#x (dirty)", f)
	}
	mustClean(t, im2)
}

// From a fourth review: a queue's owner with a fast read unreaped called
// WriteAt while CreateSnapshot, on another goroutine, paused overwrites
// and waited for the owner's read: each waited for the other for ever.
// Now writes that allocate are never paused, and the snapshot's wait is
// bounded: it fails with ErrSnapshotBusy and lets the overwrite go.
func TestRegress_OwnerWriteBesideSnapshotPause(t *testing.T) {
	const cs = 64 << 10
	for _, tc := range []struct {
		name string
		off  int64 // the owner's write: into a COPIED cluster, or a new one
	}{{"overwrite", cs}, {"allocating", 9 * cs}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
			im := r.im
			mustWrite(t, im, bytes.Repeat([]byte{0x11}, 2*cs), 0)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			q, err := im.NewQueue(4)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			if err := q.Submit(&block.Req{Op: block.OpRead, Off: 0, Buf: buf}); err != nil {
				t.Fatal(err)
			}
			snap := async(func() error { _, err := im.CreateSnapshot("s"); return err })
			for deadline := time.Now().Add(holdTimeout); im.snapPause.Load() == nil; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("CreateSnapshot never paused overwrites")
				}
			}
			// This goroutine, the queue's owner, writes synchronously.
			w := bytes.Repeat([]byte{0x33}, 4096)
			waitErr(t, async(func() error { _, err := im.WriteAt(w, tc.off); return err }), "the owner's write")
			waitQueued(t, q, "R")
			select {
			case err := <-snap:
				if err != nil && !errors.Is(err, ErrSnapshotBusy) {
					t.Fatalf("snapshot: %v", err)
				}
			case <-time.After(holdTimeout):
				t.Fatal("the snapshot never returned")
			}
			if got := readBack(t, im, tc.off, len(w)); !bytes.Equal(got, w) {
				t.Fatal("the owner's write is lost")
			}
			checkClean(t, im, r.mem)
		})
	}
}

// startHeldDowngrade writes guest clusters 0 and one in a second L2
// table, B, drops the L2 cache and starts SetVersion(2), whose scan for
// zero clusters (under mu) the rig holds at table B, past cluster 0. It
// returns once the scan is held: release h, then wait for sv.
// waitDowngrade waits for startHeldDowngrade's SetVersion(2) and reports
// whether it downgraded. It may refuse with ErrZeroClusters: with
// -tags invariants the hold may catch the flush's own check reading
// table B, before the scan, and the racing zeroing then comes first.
func waitDowngrade(t *testing.T, sv <-chan error) bool {
	t.Helper()
	select {
	case err := <-sv:
		if err != nil && !errors.Is(err, ErrZeroClusters) {
			t.Fatalf("downgrade: %v", err)
		}
		return err == nil
	case <-time.After(holdTimeout):
		t.Fatalf("downgrade: did not complete in %v (deadlock?)", holdTimeout)
	}
	return false
}

func startHeldDowngrade(t *testing.T, r *holdRig, cs int64) (h *holddev.Hold, sv <-chan error) {
	t.Helper()
	im := r.im
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, int(cs)), 0)
	mustWrite(t, im, bytes.Repeat([]byte{0x02}, int(cs)), 600<<20)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	tableB := int64(im.l1.Load().load(im.g.L1Index(600 << 20)).Offset())
	im.l2c.Invalidate()
	h = r.hd.Hold(holddev.Match{Kinds: holddev.Read, Off: tableB, End: tableB + cs})
	sv = async(func() error { return im.SetVersion(2) })
	if !h.Wait(holdTimeout) {
		t.Fatal("the downgrade's scan never reached table B")
	}
	return h, sv
}
