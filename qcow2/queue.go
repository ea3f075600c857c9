package qcow2

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Queue is a block.Queue on an Image (block A1-A6): a request whose
// guest range maps to one run of host data goes straight to a queue on
// the image's device, translated; everything else (allocation, zeros
// that need writing, backing files, compression, encryption, flush) runs
// the synchronous path on a goroutine. The rules are Q14 and Q15 in
// doc.go.
type Queue struct {
	im     *Image
	inner  block.Queue
	depth  int
	flight int

	slots  []qslot
	inReqs []block.Req // one per slot: the translated request
	free   []uint32
	batch  []*block.Req // inner requests of the Submit being built
	inOut  []*block.Req // Wait's buffer for inner completions
	ready  []*block.Req

	done  block.Completions // the slow path (A4)
	nslow int
	slow  sync.WaitGroup
	sig   chan struct{} // cap 1: a slow completion or a Wake
	woken atomic.Bool

	closed bool
}

// qslot is one request on the device's queue.
type qslot struct {
	req  *block.Req
	gate bool // holds the write gate (Q12) with token tok
	tok  uint32
}

var (
	_ block.Queuer = (*Image)(nil)
	_ block.Queue  = (*Queue)(nil)
)

// ErrQueueOpen: Close was called while a Queue on the image is open.
var ErrQueueOpen = errors.New("qcow2: a queue on the image is open")

// NewQueue implements block.Queuer: a Queue of the given depth on the
// image, over a queue on its device (the device's own when it has one,
// block.NewQueue). While it is open the image refuses to close
// (ErrQueueOpen, A6).
func (im *Image) NewQueue(depth int) (block.Queue, error) {
	if depth < 1 {
		return nil, block.ErrRange
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return nil, block.ErrClosed
	}
	inner, err := block.NewQueue(im.dev, depth)
	if err != nil {
		return nil, err
	}
	im.queues.Add(1)
	q := &Queue{im: im, inner: inner, depth: depth,
		slots: make([]qslot, depth), inReqs: make([]block.Req, depth), free: make([]uint32, depth),
		inOut: make([]*block.Req, depth), sig: make(chan struct{}, 1)}
	for i := range q.free {
		q.free[i] = uint32(depth - 1 - i)
	}
	return q, nil
}

// Submit implements block.Queue.
func (q *Queue) Submit(reqs ...*block.Req) error {
	if q.closed {
		return block.ErrClosed
	}
	if q.flight+len(reqs) > q.depth {
		return block.ErrQueueFull
	}
	q.flight += len(reqs)
	q.batch = q.batch[:0]
	for _, r := range reqs {
		r.Err = nil
		if !q.fast(r) {
			q.goSlow(r)
		}
	}
	if len(q.batch) == 0 {
		return nil
	}
	if err := q.inner.Submit(q.batch...); err != nil {
		// The device's queue has room for every slot (same depth), so
		// this is a closed or failed device: fail the batch's requests.
		for _, ir := range q.batch {
			q.finish(ir, err)
		}
	}
	clear(q.batch)
	return nil
}

// fast sends r to the device's queue if it maps to one run of host data
// (Q14) or completes it at once if it reads zeros; false means the slow
// path must run it. It never blocks on another goroutine (A3): the
// lookups are the lock-free ones of the overwrite path.
func (q *Queue) fast(r *block.Req) bool {
	im := q.im
	n := int64(len(r.Buf))
	if im.crypt != nil || n == 0 || im.state.Load()&stClosed != 0 {
		return false
	}
	switch r.Op {
	case block.OpRead:
		if block.CheckRange(r.Off, n) != nil || uint64(r.Off+n) > im.vsize.Load() {
			return false
		}
		m, err := im.mapRun(guestOff(r.Off), uint64(n))
		if err != nil || m.length != uint64(n) {
			return false
		}
		switch {
		case m.kind == format.ClusterNormal:
			q.send(r, m.host, false, 0)
		case m.kind == format.ClusterZeroPlain || m.kind == format.ClusterZeroAlloc ||
			(m.kind == format.ClusterUnallocated && im.backing == nil):
			clear(r.Buf)
			q.ready = append(q.ready, r)
		default:
			return false
		}
		im.c.guestReads.Add(1)
		im.c.guestBytesRead.Add(n)
		im.c.queueFast.Add(1)
		return true
	case block.OpWrite:
		goff := guestOff(r.Off)
		cs := int64(im.g.ClusterSize)
		if im.checkWrite(r.Off, n) != nil || im.g.ExtendedL2 || n > cs-r.Off%cs {
			return false
		}
		if blocker, _ := im.allocs.Conflict(im.g.GuestCluster(goff), 1); blocker != nil {
			blocker.Forget()
			return false
		}
		// As overwrite: the lookup and the write inside the write gate
		// (Q12); the token is given back when the write is reaped.
		tok := im.gate.enter()
		e, err := im.entry(goff)
		if err != nil || e.Type() != format.ClusterNormal || !e.Copied() || im.overlapCheckData(e.Offset()) != nil {
			im.gate.exit(tok)
			return false
		}
		im.c.guestWrites.Add(1)
		im.c.guestBytesWritten.Add(n)
		im.c.queueFast.Add(1)
		q.send(r, im.g.HostFor(e.Offset(), goff), true, tok)
		return true
	}
	return false
}

// send queues r's translated request for the device's queue.
func (q *Queue) send(r *block.Req, host format.HostOff, gate bool, tok uint32) {
	i := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	q.slots[i] = qslot{req: r, gate: gate, tok: tok}
	ir := &q.inReqs[i]
	*ir = block.Req{Op: r.Op, Off: int64(host), Buf: r.Buf, User: uint64(i)}
	q.batch = append(q.batch, ir)
}

// finish completes the translated request ir with err: the write gate's
// token goes back at once (Q12) and the guest request is ready.
func (q *Queue) finish(ir *block.Req, err error) {
	i := uint32(ir.User)
	s := q.slots[i]
	if s.gate {
		q.im.gate.exit(s.tok)
	}
	q.slots[i] = qslot{}
	*ir = block.Req{}
	q.free = append(q.free, i)
	s.req.Err = err
	q.ready = append(q.ready, s.req)
}

// goSlow runs r through the image's synchronous methods on a goroutine
// (A4).
func (q *Queue) goSlow(r *block.Req) {
	q.nslow++
	q.im.c.queueSlow.Add(1)
	q.slow.Go(func() {
		r.Err = block.Do(q.im, r)
		q.done.Put(r)
		q.signal()
		q.inner.Wake()
	})
}

func (q *Queue) signal() {
	select {
	case q.sig <- struct{}{}:
	default:
	}
}

// Wait implements block.Queue.
func (q *Queue) Wait(out []*block.Req, atLeast int) (int, error) {
	if q.closed {
		return 0, block.ErrClosed
	}
	atLeast = block.ClampWait(atLeast, q.flight, len(out))
	n := 0
	for {
		n += q.take(out[n:])
		if n >= atLeast || q.woken.Swap(false) {
			q.flight -= n
			return n, nil
		}
		if q.done.Len() > 0 {
			continue
		}
		if q.inner.InFlight() == 0 {
			// Only slow requests are out: their goroutines signal.
			<-q.sig
			continue
		}
		// Every completion still needed that the device's queue can
		// give, in one wait; a slow completion wakes it (A5).
		need := min(max(1, atLeast-n-q.nslow), q.inner.InFlight())
		k, err := q.inner.Wait(q.inOut, need)
		for _, ir := range q.inOut[:k] {
			q.finish(ir, ir.Err)
		}
		clear(q.inOut[:k])
		if err != nil {
			q.flight -= n
			return n, err
		}
	}
}

// take moves completed requests into out.
func (q *Queue) take(out []*block.Req) int {
	k := copy(out, q.ready)
	rest := copy(q.ready, q.ready[k:])
	clear(q.ready[rest:])
	q.ready = q.ready[:rest]
	s := q.done.Take(out[k:])
	q.nslow -= s
	return k + s
}

// Wake implements block.Queue.
func (q *Queue) Wake() {
	q.woken.Store(true)
	q.signal()
	q.inner.Wake()
}

// InFlight implements block.Queue.
func (q *Queue) InFlight() int { return q.flight }

// Close implements block.Queue: it waits for every request, closes the
// device's queue and lets the image close again.
func (q *Queue) Close() error {
	if q.closed {
		return block.ErrClosed
	}
	out := make([]*block.Req, q.depth)
	var werr error
	for q.flight > 0 && werr == nil {
		_, werr = q.Wait(out, q.flight)
	}
	q.slow.Wait()
	q.closed = true
	err := errors.Join(werr, q.inner.Close())
	q.im.queues.Add(-1)
	return err
}
