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
// with its writes in flight (Q16), the queued writes fail with the
// queue's error, a new cluster of theirs is neither linked nor freed (a
// leak), and the image refuses writes, snapshots and repairs from then
// on (ErrWritesLost), reads still work, and it checks without
// corruption. With extended L2 one of the writes goes into subclusters
// of a cluster that is allocated already (the same host cluster): they
// stay unallocated.
func TestQueue_AllocLost(t *testing.T) {
	t.Parallel()
	const cs = 64 << 10
	for _, xl2 := range []bool{false, true} {
		name := "plain"
		if xl2 {
			name = "xl2"
		}
		t.Run(name, func(t *testing.T) {
			mem := memdev.New(memdev.Options{})
			if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: cs, ExtendedL2: xl2}); err != nil {
				t.Fatal(err)
			}
			im, err := OpenDevice(brokenVecDev{mem}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			first := pattern(cs, 1) // written into cluster 0 before the loss
			if xl2 {
				first = pattern(4096, 1) // subclusters 0-1
			}
			mustWrite(t, im, first, 0)
			before := append(first, make([]byte, cs-len(first))...)
			q, err := im.NewQueue(4)
			if err != nil {
				t.Fatal(err)
			}
			reqs := []*block.Req{{Op: block.OpWrite, Off: 2 * cs, Buf: pattern(4096, 2)}}
			if xl2 {
				reqs = append(reqs, &block.Req{Op: block.OpWrite, Off: 8192, Buf: pattern(4096, 4)})
			}
			if err := q.Submit(reqs...); err != nil {
				t.Fatal(err)
			}
			if err := block.Drain(q); err != nil {
				t.Fatal(err)
			}
			for _, r := range reqs {
				if !errors.Is(r.Err, errBrokenRing) {
					t.Fatalf("queued write at %#x: %v, want the queue's error", r.Off, r.Err)
				}
			}
			if m := im.Metrics(); m.QueueAlloc != int64(len(reqs)) {
				t.Fatalf("%d writes went to the allocator, want %d", m.QueueAlloc, len(reqs))
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
			if got := readBack(t, im, 0, cs); string(got) != string(before) {
				t.Fatal("cluster 0 does not read back as before the loss (with xl2: were the lost write's subclusters linked?)")
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
		})
	}
}
