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
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	g := newHeldWrites(mem)
	im, err := OpenDevice(zeroKeepDev{mem, g}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	const C = 2 * cs
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, cs), C)
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	w1 := &block.Req{Op: block.OpWrite, Off: C, Buf: bytes.Repeat([]byte{0xa1}, 4096)}
	if err := q.Submit(w1); err != nil {
		t.Fatal(err)
	}
	g.waitSeen(t, 1) // W1 went down the fast path: held at the device
	zeroThenRewrite(t, im, C, 32<<10, func() error { return im.WriteZeroes(C, cs, 0) },
		func() { g.release(g.heldOff(0)); waitDone(t, q, w1) })
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
