package qcow2

import (
	"errors"
	"sync"
	"sync/atomic"
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

// wlockDev models the io_uring file's write lock (uring U1, U10) on a
// memdev: a synchronous write that is not 4 KiB-aligned is a
// read-modify-write under wmu held exclusively, an aligned one holds it
// shared; its vector queue takes wmu shared for each write from Submit
// until the write is reaped, and is broken: Wait fails every time (a
// ring whose enter keeps failing), so its writes are never reaped.
type wlockDev struct {
	*memdev.Dev
	wmu  *sync.RWMutex
	sent *atomic.Int32
}

func (d wlockDev) lock(off, n int64) func() {
	if off%4096 == 0 && n%4096 == 0 {
		d.wmu.RLock()
		return d.wmu.RUnlock
	}
	d.wmu.Lock()
	return d.wmu.Unlock
}

func (d wlockDev) Writev(off int64, bufs [][]byte) error {
	defer d.lock(off, block.VecLen(bufs))()
	return d.Dev.Writev(off, bufs)
}

func (d wlockDev) WriteZeroes(off, n int64, f block.Flags) error {
	defer d.lock(off, n)()
	return d.Dev.WriteZeroes(off, n, f)
}

func (d wlockDev) NewVecQueue(depth int) (block.Queue, error) {
	return &wlockBrokenQueue{brokenQueue{depth: depth}, d}, nil
}

// wlockBrokenQueue is brokenQueue (queue_alloc_test.go) whose writes take
// the write lock shared when submitted, as uring's do (U10).
type wlockBrokenQueue struct {
	brokenQueue
	d wlockDev
}

func (q *wlockBrokenQueue) Submit(reqs ...*block.Req) error {
	if q.flight+len(reqs) > q.depth {
		return block.ErrQueueFull
	}
	for range reqs {
		if !q.d.wmu.TryRLock() {
			return block.ErrBusy
		}
	}
	q.d.sent.Add(int32(len(reqs)))
	return q.brokenQueue.Submit(reqs...)
}

// Found in review (2026-11-30): the allocator's device queue breaks with a
// plain fill in flight (a), and a later allocating write (b) needs the
// planner's own writes (zeroing first into reused space, then a
// misaligned data write under the write lock held exclusively). The
// planner waited for the lock, which a's write holds until it is reaped,
// which never happens: neither a's loss nor b ever completed, and the
// queue could not be drained. Now the planner writes only while the
// writer has nothing in flight: a fails with the queue's error, b with
// ErrWritesLost, and the image is sound (a's cluster leaks).
func TestRegress_QueueLostWhilePlannerWrites(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	dev := wlockDev{Dev: mem, wmu: new(sync.RWMutex), sent: new(atomic.Int32)}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(cs, 9), 1*cs)
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	a := &block.Req{Op: block.OpWrite, Off: 5 * cs, Buf: pattern(4096, 1)}
	if err := q.Submit(a); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); dev.sent.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a never reached the allocator's queue")
		}
	}
	// Free a cluster below the high-water mark (from another goroutine:
	// block A3), so that b's allocation reuses it: not fresh.
	derr := make(chan error, 1)
	go func() { derr <- im.Discard(1*cs, cs) }()
	if err := <-derr; err != nil {
		t.Fatal(err)
	}
	b := &block.Req{Op: block.OpWrite, Off: 6*cs + 512, Buf: pattern(512, 2)}
	if err := q.Submit(b); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- block.Drain(q) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the queue never drained: the planner waits for the write lock the lost write holds")
	}
	if !errors.Is(a.Err, errBrokenRing) || !errors.Is(b.Err, ErrWritesLost) {
		t.Fatalf("a: %v, want the queue's error; b: %v, want ErrWritesLost", a.Err, b.Err)
	}
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 {
		t.Fatalf("check: %v, %d corruptions: %v", err, r.Corruptions, head(r.Messages, 10))
	}
	q.Close() // the writer's queue fails to close: its writes are lost
	im.Close()
}
