package qcow2_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/uring/looptest"
)

// TestFlushFailureSticksThroughImage (block B6): an image on a buffered
// file whose write-back fails (the kernel's next fdatasync succeeds with
// the writes lost) fails its Flush, every Flush after it, its queue's
// flushes and its Close, so that no acknowledged flush covers the lost
// guest writes.
func TestFlushFailureSticksThroughImage(t *testing.T) {
	dev := looptest.LoopDevice(t, 64<<20, 1<<20)
	// The image is made in a file and copied onto the device, which
	// cannot be truncated.
	src := filepath.Join(t.TempDir(), "img.qcow2")
	if err := qcow2.Create(src, qcow2.CreateOptions{Size: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dev, data, 0); err != nil {
		t.Fatal(err)
	}
	opener := qcow2.Opener(uring.Opener(uring.Options{Backend: uring.Ring}))
	im, err := qcow2.Open(dev, qcow2.Options{Opener: opener})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() }) // before the device is detached, on any exit
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(rand.Uint32() | 1)
	}
	if err := im.Writev(0, [][]byte{buf}); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := im.Flush(); err == nil {
		t.Fatal("flush of 4 MiB onto a device that keeps 1 MiB succeeded")
	}
	for i := range 2 {
		if err := im.Flush(); !errors.Is(err, block.ErrFlushFailed) {
			t.Fatalf("flush %d after the failure: %v, want ErrFlushFailed", i+2, err)
		}
	}
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	req := &block.Req{Op: block.OpFlush}
	if err := q.Submit(req); err != nil {
		t.Fatal(err)
	}
	out := make([]*block.Req, 1)
	if n, err := q.Wait(out, 1); err != nil || n != 1 {
		t.Fatalf("wait: %d, %v", n, err)
	}
	if !errors.Is(out[0].Err, block.ErrFlushFailed) {
		t.Errorf("queued flush after the failure: %v, want ErrFlushFailed", out[0].Err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); !errors.Is(err, block.ErrFlushFailed) {
		t.Errorf("close after the failure: %v, want ErrFlushFailed", err)
	}
}
