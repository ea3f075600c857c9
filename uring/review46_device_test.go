//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// TestReview46_QueueWritePastDeviceEnd (U15, block A2): on a block
// device, a write that crosses the device's end fails with ENOSPC before
// reaching the kernel, having written nothing. A queued write means what
// Writev means, so it must too: the kernel would write the part inside
// the device (a short write) and the rest would fail.
func TestReview46_QueueWritePastDeviceEnd(t *testing.T) {
	const size = 1 << 20
	dev := looptest.LoopDevice(t, size, 4<<20)
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			f, err := Open(dev, Options{Backend: Ring, Direct: direct})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			old := pattern(50, 8192)
			if err := block.WriteAt(f, old[:4096], size-4096); err != nil {
				t.Fatal(err)
			}
			data := pattern(51, 8192)
			// Writev: refused before the kernel, nothing written.
			if err := block.WriteAt(f, data, size-4096); !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("Writev across the end: %v, want ENOSPC", err)
			}
			if got := readAll(t, f, size-4096, 4096); !bytes.Equal(got, old[:4096]) {
				t.Fatal("precondition: Writev across the end wrote the part inside")
			}
			q, err := f.NewQueue(4)
			if err != nil {
				t.Fatal(err)
			}
			defer q.Close()
			// Aligned (the ring), and misaligned (the slow path on
			// O_DIRECT).
			for _, c := range []struct{ off, n int64 }{{size - 4096, 8192}, {size - 100, 200}} {
				off := c.off
				req := &block.Req{Op: block.OpWrite, Off: off, Buf: data[:c.n]}
				if err := q.Submit(req); err != nil {
					t.Fatal(err)
				}
				out := make([]*block.Req, 1)
				if _, err := q.Wait(out, 1); err != nil {
					t.Fatal(err)
				}
				if !errors.Is(req.Err, unix.ENOSPC) {
					t.Errorf("queued write at %d across the end: %v, want ENOSPC", off, req.Err)
				}
				if got := readAll(t, f, size-4096, 4096); !bytes.Equal(got, old[:4096]) {
					t.Fatalf("a queued write at %d across the device's end wrote the part inside it (Writev writes nothing)", off)
				}
			}
		})
	}
}
