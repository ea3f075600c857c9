package qcow2

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// gatedVecDev is a memdev whose vector queue (the one a queue's
// allocator writes through) holds every write until the test releases
// it, so a test sees what the allocator has in flight and decides what
// completes.
type gatedVecDev struct {
	*memdev.Dev
	g *heldWrites
}

func (d gatedVecDev) NewVecQueue(depth int) (block.Queue, error) {
	return &gatedQueue{g: d.g, depth: depth}, nil
}

type heldWrites struct {
	mu    sync.Mutex
	cond  *sync.Cond
	dev   *memdev.Dev
	held  []*block.Req // submitted, not released
	ready []*block.Req // released (written), not yet returned by Wait
	seen  int          // submitted in all
	woken bool
}

func newHeldWrites(dev *memdev.Dev) *heldWrites {
	g := &heldWrites{dev: dev}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// waitSeen waits until n writes in all have reached the queue.
func (g *heldWrites) waitSeen(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.seen < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes reached the allocator's queue, want %d (%d held)", g.seen, n, len(g.held))
		}
		g.mu.Unlock()
		time.Sleep(time.Millisecond)
		g.mu.Lock()
	}
}

// heldOff is the offset of the i-th write held.
func (g *heldWrites) heldOff(i int) int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held[i].Off
}

// release writes the held requests that start at one of offs and lets
// Wait return them.
func (g *heldWrites) release(offs ...int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	keep := g.held[:0]
	for _, r := range g.held {
		found := false
		for _, o := range offs {
			found = found || r.Off == o
		}
		if !found {
			keep = append(keep, r)
			continue
		}
		r.Err = g.dev.Writev(r.Off, [][]byte{r.Buf})
		g.ready = append(g.ready, r)
	}
	g.held = keep
	g.cond.Broadcast()
}

type gatedQueue struct {
	g      *heldWrites
	depth  int
	flight int
}

func (q *gatedQueue) Submit(reqs ...*block.Req) error {
	if q.flight+len(reqs) > q.depth {
		return block.ErrQueueFull
	}
	q.flight += len(reqs)
	q.g.mu.Lock()
	q.g.held = append(q.g.held, reqs...)
	q.g.seen += len(reqs)
	q.g.mu.Unlock()
	return nil
}

func (q *gatedQueue) Wait(out []*block.Req, min int) (int, error) {
	g := q.g
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.ready) < min && len(g.ready) < q.flight && !g.woken {
		g.cond.Wait()
	}
	g.woken = false
	n := copy(out, g.ready)
	g.ready = append(g.ready[:0], g.ready[n:]...)
	q.flight -= n
	return n, nil
}

func (q *gatedQueue) Wake() {
	q.g.mu.Lock()
	q.g.woken = true
	q.g.cond.Broadcast()
	q.g.mu.Unlock()
}

func (q *gatedQueue) InFlight() int { return q.flight }
func (q *gatedQueue) Close() error  { return nil }

// completed returns, without blocking, the requests q has completed.
func completed(t *testing.T, q block.Queue) []*block.Req {
	t.Helper()
	out := make([]*block.Req, 16)
	n, err := q.Wait(out, 0)
	if err != nil {
		t.Fatal(err)
	}
	return out[:n]
}

// waitDone waits for r to complete on q.
func waitDone(t *testing.T, q block.Queue, r *block.Req) {
	t.Helper()
	out := make([]*block.Req, 16)
	for {
		n, err := q.Wait(out, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range out[:n] {
			if c != r {
				t.Fatalf("request at %#x completed, want the one at %#x", c.Off, r.Off)
			}
			if c.Err != nil {
				t.Fatalf("request at %#x: %v", c.Off, c.Err)
			}
			return
		}
	}
}

func gatedImage(t *testing.T) (*Image, *memdev.Dev, *heldWrites) {
	t.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	g := newHeldWrites(mem)
	im, err := OpenDevice(gatedVecDev{mem, g}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return im, mem, g
}

// checkClean closes im and checks what it left on mem, with our Check
// and with qemu-img check: no corruption, no leak.
func checkClean(t *testing.T, im *Image, mem *memdev.Dev) {
	t.Helper()
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	mustClean(t, im2)
	p := filepath.Join(t.TempDir(), "q.qcow2")
	if err := mem.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	if err := testkit.QemuCheckReport(p, testkit.QemuCheckResult.Clean); err != nil {
		t.Errorf("qemu-img check: %v", err)
	}
}

// TestQueue_AllocPipelines: the allocator plans and sends a new cluster's
// write while an earlier one is still in flight, and each allocating
// write completes, linked, as soon as its own data is written (Q16): a
// later one can overtake an earlier one, which stays unlinked (it reads
// as zeros) until its write is back.
func TestQueue_AllocPipelines(t *testing.T) {
	const cs = 64 << 10
	im, mem, g := gatedImage(t)
	q, err := im.NewQueue(8)
	if err != nil {
		t.Fatal(err)
	}
	a := &block.Req{Op: block.OpWrite, Off: 1 * cs, Buf: pattern(4096, 1)}
	b := &block.Req{Op: block.OpWrite, Off: 3 * cs, Buf: pattern(4096, 2)}
	if err := q.Submit(a); err != nil {
		t.Fatal(err)
	}
	g.waitSeen(t, 1)
	if err := q.Submit(b); err != nil {
		t.Fatal(err)
	}
	g.waitSeen(t, 2) // b's write goes out while a's is held
	hostB := g.heldOff(1)
	g.release(hostB)
	waitDone(t, q, b)
	if got := readBack(t, im, 3*cs, 4096); string(got) != string(b.Buf) {
		t.Fatal("the second write does not read back after it completed")
	}
	if got := readBack(t, im, 1*cs, 4096); string(got) != string(make([]byte, 4096)) {
		t.Fatal("the first write's cluster was linked before its write came back")
	}
	if c := completed(t, q); len(c) != 0 {
		t.Fatalf("%d more requests completed, want none before the first write is released", len(c))
	}
	g.release(g.heldOff(0))
	waitDone(t, q, a)
	if got := readBack(t, im, 1*cs, 4096); string(got) != string(a.Buf) {
		t.Fatal("the first write does not read back")
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, im, mem)
}

// TestQueue_AllocNoEarlyHandBack: a cluster's writes that do not fit the
// writer's queue at once go out as slots free up; the allocation is
// linked, and its requests complete, only after the last of them is
// back, not when the first ones are.
func TestQueue_AllocNoEarlyHandBack(t *testing.T) {
	const cs = 64 << 10
	defer func(d int) { allocDepth = d }(allocDepth)
	allocDepth = 2
	im, mem, g := gatedImage(t)
	q, err := im.NewQueue(8)
	if err != nil {
		t.Fatal(err)
	}
	// Four writes that follow each other in one new cluster: one group,
	// one allocation, four pieces for the writer.
	reqs := make([]*block.Req, 4)
	for i := range reqs {
		reqs[i] = &block.Req{Op: block.OpWrite, Off: cs + int64(i)*4096, Buf: pattern(4096, byte(i+1))}
	}
	if err := q.Submit(reqs...); err != nil {
		t.Fatal(err)
	}
	g.waitSeen(t, 2)
	// The first two pieces come back together, with none of the
	// cluster's writes left in flight: the writer sends the other two.
	g.release(g.heldOff(0), g.heldOff(1))
	g.waitSeen(t, 4)
	time.Sleep(20 * time.Millisecond) // room for a wrong hand-back to complete them
	if c := completed(t, q); len(c) != 0 {
		t.Fatalf("%d requests completed with two of the cluster's writes still held", len(c))
	}
	g.release(g.heldOff(0), g.heldOff(1))
	if err := block.Drain(q); err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if r.Err != nil {
			t.Fatalf("write at %#x: %v", r.Off, r.Err)
		}
		if got := readBack(t, im, r.Off, 4096); string(got) != string(r.Buf) {
			t.Fatalf("write at %#x does not read back", r.Off)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	checkClean(t, im, mem)
}
