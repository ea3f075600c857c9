package qcow2

import (
	"errors"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// brokenVecDev is a memdev whose vector queue (block.VecQueuer, the one
// a queue's allocator opens) accepts requests and then never completes
// them: Wait fails every time, as a ring that broke with writes in
// flight would.
type brokenVecDev struct{ *memdev.Dev }

func (d brokenVecDev) NewVecQueue(depth int) (block.Queue, error) {
	return &brokenQueue{depth: depth}, nil
}

type brokenQueue struct{ depth, flight int }

var errBrokenRing = errors.New("test: the ring is broken")

func (q *brokenQueue) Submit(reqs ...*block.Req) error {
	if q.flight+len(reqs) > q.depth {
		return block.ErrQueueFull
	}
	q.flight += len(reqs)
	return nil
}
func (q *brokenQueue) Wait([]*block.Req, int) (int, error) { return 0, errBrokenRing }
func (q *brokenQueue) Wake()                               {}
func (q *brokenQueue) InFlight() int                       { return q.flight }
func (q *brokenQueue) Close() error                        { return nil }

// TestQueue_AllocLost: when the allocator's device queue fails for good
// with its writes in flight (Q16), the queued write fails with the
// queue's error, its cluster is neither linked nor freed (a leak), and
// the image refuses writes, snapshots and repairs from then on
// (ErrWritesLost), reads still work, and it checks without corruption.
func TestQueue_AllocLost(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(brokenVecDev{mem}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(cs, 1), 0)
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	r := &block.Req{Op: block.OpWrite, Off: 2 * cs, Buf: pattern(4096, 2)}
	if err := q.Submit(r); err != nil {
		t.Fatal(err)
	}
	if err := block.Drain(q); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(r.Err, errBrokenRing) {
		t.Fatalf("queued write: %v, want the queue's error", r.Err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(pattern(4096, 3), 3*cs); !errors.Is(err, ErrWritesLost) || !errors.Is(err, block.ErrReadOnly) {
		t.Fatalf("write after the loss: %v, want ErrWritesLost (a read-only error)", err)
	}
	// Metadata changes could place a table where a lost write lands.
	if !im.ReadOnly() {
		t.Error("ReadOnly() is false after the loss")
	}
	if _, err := im.CreateSnapshot("s"); !errors.Is(err, ErrWritesLost) {
		t.Errorf("snapshot after the loss: %v, want ErrWritesLost", err)
	}
	if _, err := im.Check(CheckOptions{Repair: RepairLeaks}); !errors.Is(err, ErrReadOnly) {
		t.Errorf("leak repair after the loss: %v, want a read-only error", err)
	}
	if got := readBack(t, im, 0, cs); string(got) != string(pattern(cs, 1)) {
		t.Fatal("data written before the loss does not read back")
	}
	if got := readBack(t, im, 2*cs, 4096); string(got) != string(make([]byte, 4096)) {
		t.Fatal("the lost write's cluster was linked")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	res, err := im2.Check(CheckOptions{})
	if err != nil || res.Corruptions != 0 {
		t.Fatalf("check: %+v %v", res, err)
	}
	if res.Leaks == 0 {
		t.Error("the lost write's cluster is not leaked: it was freed or linked")
	}
}
