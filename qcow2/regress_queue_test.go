package qcow2

import (
	"errors"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// refusingQueueDev is a memdev whose own queue (block.Queuer: the one a
// Queue's fast path uses) refuses every Submit, as a failed device's
// would; its vector queue (the allocator's) works.
type refusingQueueDev struct{ *memdev.Dev }

var errRefused = errors.New("test: the device's queue failed")

func (d refusingQueueDev) NewQueue(depth int) (block.Queue, error) {
	gq, err := block.NewGoQueue(d.Dev, depth)
	return &refusingQueue{gq}, err
}

func (d refusingQueueDev) NewVecQueue(depth int) (block.Queue, error) {
	return block.NewGoQueue(d.Dev, depth)
}

type refusingQueue struct{ *block.GoQueue }

func (q *refusingQueue) Submit(...*block.Req) error { return errRefused }

// Found in review (2026-11-30): a write parked behind an allocating write
// into its cluster goes in again from Wait once that write is back; the
// cluster is linked by then, so it takes the fast path, and when the
// device's queue refuses it, it is complete at once, in q.ready. Wait
// then slept on the slow path's signal, with nothing left to send one,
// and never returned it.
func TestRegress_QueueRetryRefusedReturns(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(refusingQueueDev{mem}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(4096, 7), 0) // cluster 0's L2 slice is cached
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	s := &block.Req{Op: block.OpWrite, Off: cs, Buf: pattern(4096, 1)}        // allocates cluster 1
	w := &block.Req{Op: block.OpWrite, Off: cs + 8192, Buf: pattern(4096, 2)} // parked behind s
	if err := q.Submit(s, w); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		out := make([]*block.Req, 2)
		for n := 0; n < 2; {
			k, err := q.Wait(out[n:], 2-n)
			if err != nil {
				done <- err
				return
			}
			n += k
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Wait did not return the refused write (s: %v, w: %v)", s.Err, w.Err)
	}
	if s.Err != nil || !errors.Is(w.Err, errRefused) {
		t.Fatalf("s: %v, want nil; w: %v, want the refusal", s.Err, w.Err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, readBack(t, im, cs, 4096), pattern(4096, 1), "the allocating write")
	checkClean(t, im, mem)
}
