//go:build linux

package uring

import (
	"errors"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
)

// A queue deeper than a ring takes is not supported by the File, and
// block.NewQueue gives the goroutine queue instead: qimg bench -d 8192
// failed with "offset or length out of range" where qemu-img bench runs
// (found by a qbench review).
func TestQueue_DeeperThanRing(t *testing.T) {
	f := openTemp(t, Options{Backend: Ring})
	if _, err := f.NewQueue(maxEntries + 1); !errors.Is(err, block.ErrNotSupported) {
		t.Fatalf("NewQueue(%d): %v, want ErrNotSupported", maxEntries+1, err)
	}
	if _, err := f.NewQueue(0); !errors.Is(err, block.ErrRange) {
		t.Fatalf("NewQueue(0): %v, want ErrRange", err)
	}
	q, err := block.NewQueue(f, 3*maxEntries)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, ring := q.(*Queue); ring {
		t.Fatal("a ring queue deeper than the ring")
	}
	buf := make([]byte, 4096)
	reqs := make([]*block.Req, 64)
	for i := range reqs {
		reqs[i] = &block.Req{Op: block.OpWrite, Off: int64(i) * 4096, Buf: buf}
	}
	blocktest.MustComplete(t, q, reqs...)
}
