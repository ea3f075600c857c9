package qcow2

import (
	"bytes"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// zeroKeepDev: a memdev whose own queue (the fast path's) holds every write
// until released.
type zeroKeepDev struct {
	*memdev.Dev
	g *heldWrites
}

func (d zeroKeepDev) NewQueue(depth int) (block.Queue, error) {
	return &gatedQueue{g: d.g, depth: depth}, nil
}
func (d zeroKeepDev) Close() error { return nil }

// A queued fast overwrite W1 found cluster C Normal|COPIED and was in
// flight. WriteZeroes (no unmap) kept C's host cluster as ZeroAlloc
// without syncing the data gate; a later write W2 elsewhere in C reused
// that host cluster (zeros, then its data) and, before W2's link, W1
// landed and was acknowledged. A read then returned zeros for W1's range
// (the zeroing ordered after W1), but once W2 linked, the same range
// read W1's data, which nothing wrote after the zeroing. Found by a
// review helper. A zeroing that keeps a cluster now waits for the
// requests that found it Normal (Q12) before it returns.
func TestRegress_ZeroKeptClusterWriteStaysZeroed(t *testing.T) {
	const cs = 64 << 10
	im, c, finish := heldQueuedW1(t, CreateOptions{Size: 4 << 20, ClusterSize: cs})
	zeroThenRewrite(t, im, c, 32<<10, func() error { return im.WriteZeroes(c, cs, 0) }, finish)
}

// heldQueuedW1 makes an image of co on a memdev whose queue holds every
// write, writes its third cluster whole and flushes, and sends W1 (0xa1
// into the cluster's first 4 KiB) down a queue's fast path, where the
// device holds it. It returns the image, the cluster's offset, and the
// function that lets W1 complete (zeroThenRewrite's finish).
func heldQueuedW1(t *testing.T, co CreateOptions) (*Image, int64, func()) {
	t.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	g := newHeldWrites(mem)
	im, err := OpenDevice(zeroKeepDev{mem, g}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cs := int64(im.g.ClusterSize)
	c := 2 * cs
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, int(cs)), c)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := q.Close(); err != nil {
			t.Error(err)
		}
		im.Close()
	})
	w1 := &block.Req{Op: block.OpWrite, Off: c, Buf: bytes.Repeat([]byte{0xa1}, 4096)}
	if err := q.Submit(w1); err != nil {
		t.Fatal(err)
	}
	g.waitSeen(t, 1) // W1 went down the fast path: held at the device
	return im, c, func() { g.release(g.heldOff(0)); waitDone(t, q, w1) }
}
