package qring_test

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// TestExampleQueuePaths runs Example_queue's workload and checks
// the paths its comment names: the first writes, which allocate, go to
// the queue's allocator (QueueAlloc), not the synchronous path on
// goroutines (QueueSlow), which the comment claimed; the reads of the
// allocated clusters go straight to the device's queue (QueueFast).
func TestExampleQueuePaths(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	img, err := qcow2.Open(path, qcow2.Options{Opener: qcow2.Opener(uring.Opener(uring.Options{Direct: true}))})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	q, err := img.NewQueue(64)
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]*block.Req, 64)
	for i := range reqs {
		reqs[i] = &block.Req{Off: int64(i) * 4096, Buf: block.AlignedBuf(4096, block.DefaultMemAlign)}
	}
	done := make([]*block.Req, 64)
	run := func(op block.Op) qcow2.Metrics {
		before := img.Metrics()
		for _, r := range reqs {
			r.Op = op
		}
		if err := q.Submit(reqs...); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(reqs); {
			k, err := q.Wait(done[n:], len(reqs)-n)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range done[n : n+k] {
				if r.Err != nil {
					t.Fatal(r.Err)
				}
			}
			n += k
		}
		return img.Metrics().Sub(before)
	}
	w := run(block.OpWrite)
	if w.QueueSlow != 0 || w.QueueAlloc != 64 {
		t.Errorf("first writes: QueueAlloc %d, QueueSlow %d; want 64 and 0 (the queue's allocator)", w.QueueAlloc, w.QueueSlow)
	}
	r := run(block.OpRead)
	if r.QueueFast != 64 {
		t.Errorf("reads: QueueFast %d, want 64", r.QueueFast)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}
