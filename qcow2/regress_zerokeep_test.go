package qcow2

import (
	"bytes"
	"sync"
	"testing"
	"time"

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
	zdone := make(chan error, 1)
	go func() { zdone <- im.WriteZeroes(C, cs, 0) }()
	released := false
	select {
	case err := <-zdone: // without the fix: at once
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(200 * time.Millisecond): // waits for W1
		g.release(g.heldOff(0))
		released = true
		waitDone(t, q, w1)
		if err := <-zdone; err != nil {
			t.Fatal(err)
		}
	}
	// W2: hold its link.
	var once sync.Once
	inLink := make(chan struct{})
	relLink := make(chan struct{})
	im.linkFault = func() error {
		once.Do(func() { close(inLink); <-relLink })
		return nil
	}
	w2 := make(chan error, 1)
	go func() { _, err := im.WriteAt(bytes.Repeat([]byte{0xb2}, 4096), C+32<<10); w2 <- err }()
	select {
	case <-inLink:
	case <-time.After(5 * time.Second):
		t.Fatal("W2 did not reach its link")
	}
	// W1 lands now (after W2's zeroing of the reused cluster) and is
	// acknowledged.
	if !released {
		g.release(g.heldOff(0))
		waitDone(t, q, w1)
	}
	r1 := make([]byte, 4096)
	if err := im.Readv(C, [][]byte{r1}); err != nil {
		t.Fatal(err)
	}
	close(relLink)
	if err := <-w2; err != nil {
		t.Fatal(err)
	}
	r2 := readBack(t, im, C, 4096)
	t.Logf("after W1's ack: %#x..., after W2's link: %#x...", r1[:4], r2[:4])
	if !bytes.Equal(r1, r2) {
		t.Errorf("W1's range read %#x after W1 was acknowledged, then %#x after an unrelated write elsewhere in the cluster", r1[0], r2[0])
	}
	im.linkFault = nil
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
