package qcow2

import (
	"bytes"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/qcow2/format"
)

// Found in review (2026-11-30), left open then: reads did not enter the
// data gate (Q12). A read R (queued on the fast path, or synchronous)
// found guest cluster 0 at host cluster H and is in flight; a discard of
// cluster 0 freed H at once, H went to guest cluster 5, and R returned
// guest cluster 5's bytes as guest cluster 0's. Now the discard waits
// for R, and R returns what cluster 0 held.
func TestRegress_ReadRacingDiscardReadsItsOwnCluster(t *testing.T) {
	for _, queued := range []bool{true, false} {
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
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			host := hostOf(t, im, 0)
			finishR := startHeldRead(t, r, host, host+cs, queued)
			// From another goroutine (block A3).
			d := async(func() error { return im.Discard(0, cs) })
			x := bytes.Repeat([]byte{0x22}, cs)
			dBlocked := blocked(d, 300*time.Millisecond)
			if !dBlocked {
				t.Error("the discard freed the cluster while R was still reading it")
				mustWrite(t, im, x, 5*cs) // into the freed cluster, before R reads
			}
			if buf := finishR(); !bytes.Equal(buf, old[:len(buf)]) {
				t.Fatalf("R of guest cluster 0 returned %#x, want 0x11: another guest cluster's bytes", buf[0])
			}
			if dBlocked {
				waitErr(t, d, "discard")
				mustWrite(t, im, x, 5*cs)
			}
			if got := readBack(t, im, 5*cs, cs); !bytes.Equal(got, x) {
				t.Fatalf("guest cluster 5 reads %#x, want 0x22", got[0])
			}
			checkClean(t, im, r.mem)
		})
	}
}

// An allocation that replaces a cluster (copy-on-write out of a
// compressed cluster, or out of a normal one without COPIED whose
// refcount is 1) frees the old one under mu, where it cannot wait for
// the data gate. A read that found the old entry and is still in flight
// then read whatever the next owner of the cluster wrote (for the
// compressed one, once a flush had ended Q13's hold). Now the cluster is
// held until the gate has passed (held.go), and given out after.
func TestRegress_ReadOfReplacedClusterHeldUntilGatePasses(t *testing.T) {
	for _, kind := range []string{"compressed", "normal-not-copied"} {
		t.Run(kind, func(t *testing.T) {
			const cs = 64 << 10
			r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
			im := r.im
			old := bytes.Repeat([]byte("compressible, but not zeros. "), cs/29+1)[:cs]
			var lo, hi int64 // host range R reads
			if kind == "compressed" {
				if err := im.WriteCompressed(0, old); err != nil {
					t.Fatal(err)
				}
				e := entryOf(t, im, 0)
				if e.Type() != format.ClusterCompressed {
					t.Fatalf("cluster 0 is %v, want compressed", e.Type())
				}
				c := e.DecodeCompressed(&im.g)
				lo, hi = int64(c.Off), int64(c.Off)+int64(c.Size)
			} else {
				mustWrite(t, im, old, 0)
				lo = hostOf(t, im, 0)
				hi = lo + cs
				im.mu.Lock()
				err := im.setEntry(0, format.MakeL2(format.HostOff(lo), false, false))
				im.mu.Unlock()
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			finishR := startHeldRead(t, r, lo, hi, false)
			// Replace cluster 0 (its copy-on-write reads the old cluster
			// past the hold), flush (Q13), and allocate cluster 5.
			nw := bytes.Repeat([]byte{0x33}, 4096)
			mustWrite(t, im, nw, 0)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			x := bytes.Repeat([]byte{0x22}, cs)
			mustWrite(t, im, x, 5*cs)
			if got := hostOf(t, im, 5*cs); got <= lo && lo < got+cs {
				t.Error("guest cluster 5 was given the old cluster while R was still reading it")
			}
			if buf := finishR(); !bytes.Equal(buf, old[:len(buf)]) {
				t.Fatal("R of guest cluster 0 did not return its old bytes")
			}
			// The hold ends at the next flush once R has left.
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			im.mu.Lock()
			n := len(im.held)
			im.mu.Unlock()
			if n != 0 {
				t.Fatalf("%d clusters still held after R left and a flush", n)
			}
			want := append(append([]byte(nil), nw...), old[len(nw):]...)
			if got := readBack(t, im, 0, cs); !bytes.Equal(got, want) {
				t.Fatal("guest cluster 0 lost its copy-on-write")
			}
			checkClean(t, im, r.mem)
		})
	}
}

func entryOf(t *testing.T, im *Image, off int64) format.L2Entry {
	t.Helper()
	e, err := im.entry(format.GuestOff(off))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// hostOf is the host offset of the data cluster at guest offset off.
func hostOf(t *testing.T, im *Image, off int64) int64 {
	t.Helper()
	e := entryOf(t, im, off)
	if e.Type() != format.ClusterNormal {
		t.Fatalf("guest %#x is %v, want a data cluster", off, e.Type())
	}
	return int64(e.Offset())
}

// Found in the same review: Check with repair between a discard's entry
// change and its free (the discard waiting in the gate for a read) saw
// the cluster as leaked and set its refcount to 0; the cluster went to
// guest cluster 5, and the discard then took it below its references.
// Now Check counts the discard's pending entries.
func TestRegress_CheckRepairDuringDiscardKeepsPendingFrees(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	old := bytes.Repeat([]byte{0x11}, cs)
	mustWrite(t, im, old, 0)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	host := hostOf(t, im, 0)
	finishR := startHeldRead(t, r, host, host+cs, false)
	d := async(func() error { return im.Discard(0, cs) })
	if !blocked(d, 200*time.Millisecond) {
		t.Fatal("the discard did not wait for R")
	}
	res, err := im.Check(CheckOptions{Repair: RepairLeaks})
	if err != nil {
		t.Fatal(err)
	}
	if res.Leaks != 0 || res.LeaksFixed != 0 || res.Corruptions != 0 {
		t.Errorf("check during the discard: %d leaks (%d fixed), %d corruptions: %v", res.Leaks, res.LeaksFixed, res.Corruptions, res.Messages)
	}
	x := bytes.Repeat([]byte{0x22}, cs)
	mustWrite(t, im, x, 5*cs)
	if got := hostOf(t, im, 5*cs); got == host {
		t.Error("guest cluster 5 was given the cluster the discard still owns")
	}
	if buf := finishR(); !bytes.Equal(buf, old[:len(buf)]) {
		t.Fatalf("R of guest cluster 0 returned %#x, want 0x11", buf[0])
	}
	waitErr(t, d, "discard")
	if got := readBack(t, im, 5*cs, cs); !bytes.Equal(got, x) {
		t.Fatalf("guest cluster 5 reads %#x, want 0x22", got[0])
	}
	checkClean(t, im, r.mem)
}

// Found in the same review: the copy of an L2 table whose L1 entry lacks
// COPIED (a stale flag) freed the old table at once when its refcount
// was 1, while a lookup that loaded the old L1 entry lock-free could
// still read it. Now the table is held until the gate has passed.
func TestRegress_CopiedL2TableHeldUntilGatePasses(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, 4096), 0)
	l1 := im.l1.Load()
	table := l1.load(0).Offset()
	im.mu.Lock()
	l1.store(0, format.MakeL1(table, false)) // stale: refcount 1 without COPIED
	im.mu.Unlock()
	tok := im.gate.enter()                                 // a lookup that loaded the old L1 entry
	mustWrite(t, im, bytes.Repeat([]byte{0x33}, 4096), cs) // copies the table
	if got := im.l1.Load().load(0).Offset(); got == table {
		t.Fatal("the table was not copied")
	}
	x := bytes.Repeat([]byte{0x22}, cs)
	for _, g := range []int64{1, 5, 6, 7} { // 1: written above, after the copy
		if g != 1 {
			mustWrite(t, im, x, g*cs)
		}
		if hostOf(t, im, g*cs) == int64(table) {
			t.Errorf("guest cluster %d was given the old L2 table while a lookup could still read it", g)
		}
	}
	im.gate.exit(tok)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im.mu.Lock()
	n := len(im.held)
	im.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d clusters still held after the lookup left and a flush", n)
	}
	checkClean(t, im, r.mem)
}

// startHeldRead starts R, a 4 KiB read of guest offset 0, whose device
// read the rig holds at host range [lo, hi): synchronous on a goroutine,
// or queued on a new queue of the image (it must take the fast path,
// where it holds a gate token until reaped). It returns once R reached
// the device; finish releases it, waits for R (reaping it and closing
// the queue) and returns what R read.
func startHeldRead(t *testing.T, r *holdRig, lo, hi int64, queued bool) (finish func() []byte) {
	t.Helper()
	im := r.im
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Read, Off: lo, End: hi})
	buf := make([]byte, 4096)
	var q block.Queue
	var rdone <-chan error
	if queued {
		var err error
		if q, err = im.NewQueue(4); err != nil {
			t.Fatal(err)
		}
		fast := im.c.queueFast.Load()
		if err := q.Submit(&block.Req{Op: block.OpRead, Off: 0, Buf: buf}); err != nil {
			t.Fatal(err)
		}
		if im.c.queueFast.Load() == fast {
			t.Fatal("the queued read did not take the fast path")
		}
	} else {
		rdone = async(func() error { _, err := im.ReadAt(buf, 0); return err })
	}
	if !h.Wait(holdTimeout) {
		t.Fatal("R never reached the device")
	}
	return func() []byte {
		t.Helper()
		h.Release()
		if q != nil {
			waitQueued(t, q, "R")
		} else {
			waitErr(t, rdone, "R")
		}
		return buf
	}
}
