package qcow2

import (
	"bytes"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/holddev"
)

// Found in review (2026-11-30): an overwrite W (the queue's fast path, or
// the synchronous one) found guest cluster 0 at host cluster H and is in
// flight, holding a write-gate token (Q12). WriteZeroes without unmap
// keeps H, as a ZeroAlloc entry; a discard then freed that entry without
// waiting for the gate, since only Normal entries synced it. H went to
// guest cluster 5, and W landed in guest cluster 5's acknowledged data.
// Now the discard waits for W, and guest cluster 5 reads what was
// written to it.
func TestRegress_DiscardOfZeroAllocWaitsForWriters(t *testing.T) {
	for _, queued := range []bool{true, false} {
		name := "sync"
		if queued {
			name = "queued"
		}
		t.Run(name, func(t *testing.T) {
			const cs = 64 << 10
			r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
			im := r.im
			mustWrite(t, im, bytes.Repeat([]byte{0xaa}, cs), 0)
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			w := bytes.Repeat([]byte{0x11}, 4096)
			h := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Fn: isData(w)})
			var q block.Queue
			var wdone <-chan error
			if queued {
				var err error
				if q, err = im.NewQueue(4); err != nil {
					t.Fatal(err)
				}
				if err := q.Submit(&block.Req{Op: block.OpWrite, Off: 0, Buf: w}); err != nil {
					t.Fatal(err)
				}
			} else {
				wdone = async(func() error { _, err := im.WriteAt(w, 0); return err })
			}
			if !h.Wait(holdTimeout) {
				t.Fatal("W never reached the device")
			}
			// From another goroutine (block A3): zero keeping the
			// cluster, then discard it.
			zd := async(func() error {
				if err := im.WriteZeroes(0, cs, 0); err != nil {
					return err
				}
				return im.Discard(0, cs)
			})
			x := bytes.Repeat([]byte{0x22}, cs)
			zdBlocked := blocked(zd, 300*time.Millisecond)
			if !zdBlocked {
				t.Error("the discard freed the cluster while W was still writing into it")
				mustWrite(t, im, x, 5*cs) // into the freed cluster, before W lands
			}
			h.Release()
			if q != nil {
				out := make([]*block.Req, 1)
				if _, err := q.Wait(out, 1); err != nil || out[0].Err != nil {
					t.Fatalf("W: %v %v", err, out[0].Err)
				}
				if err := q.Close(); err != nil {
					t.Fatal(err)
				}
			} else if err := <-wdone; err != nil {
				t.Fatal(err)
			}
			if zdBlocked {
				waitErr(t, zd, "zero and discard")
			}
			if zdBlocked {
				mustWrite(t, im, x, 5*cs)
			}
			if got := readBack(t, im, 5*cs, cs); !bytes.Equal(got, x) {
				t.Fatalf("guest cluster 5 reads %#x at 0, want 0x22: an older write to guest cluster 0 landed in it", got[0])
			}
			if got := readBack(t, im, 0, cs); !bytes.Equal(got, make([]byte, cs)) {
				t.Fatalf("guest cluster 0 reads %#x at 0 after its discard", got[0])
			}
			checkClean(t, im, r.mem)
		})
	}
}
