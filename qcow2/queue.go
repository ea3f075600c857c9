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
// the image's device, translated; a write inside one cluster that needs
// a new cluster (with extended L2: a subcluster allocated) goes to the
// queue's allocator (queue_alloc.go); everything else (writes across
// clusters, reads of backing files or compressed clusters, encryption,
// zeroings, discards, flushes) runs the synchronous path on a
// goroutine. The rules are Q14-Q16 in doc.go.
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
	// Slow writes by guest cluster (Q14): contiguous writes into one
	// cluster of a Submit go to the synchronous path as one vector (one
	// allocation for all of them); a later write into a cluster with a
	// slow write out waits in parked until that write is back, then
	// goes in again (by then, usually, as an overwrite).
	group   []*block.Req
	groupC  uint64
	slowC   map[uint64]int
	parked  map[uint64][]*block.Req
	nparked int
	retry   []*block.Req
	sig     chan struct{} // cap 1: a slow completion or a Wake
	woken   atomic.Bool
	alloc   qalloc // allocating writes (Q16, queue_alloc.go)

	closed bool
}

// qslot is one request on the device's queue.
type qslot struct {
	req  *block.Req
	gate bool // holds the data gate (Q12) with token tok
	tok  uint64
}

var (
	_ block.Queuer    = (*Image)(nil)
	_ block.Discarder = (*Image)(nil) // a queued discard (block A2) is Image.Discard
	_ block.Queue     = (*Queue)(nil)
)

// ErrQueueOpen: Close was called while a Queue on the image is open.
var ErrQueueOpen = errors.New("qcow2: a queue on the image is open")

// NewQueue implements block.Queuer: a Queue of the given depth on the
// image, over a queue on its device (the device's own when it has one,
// block.NewQueue). While it is open the image refuses to close
// (ErrQueueOpen, A6).
func (im *Image) NewQueue(depth int) (block.Queue, error) {
	if depth < 1 || depth > block.MaxQueueDepth {
		return nil, block.ErrRange
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed || im.closing {
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
	if err := block.CheckReqs(reqs); err != nil {
		return err
	}
	q.flight += len(reqs)
	for _, r := range reqs {
		r.Err = nil
		switch r.Op {
		case block.OpWrite:
			q.im.markDirty(r.Off, int64(len(r.Buf))) // Q22
		case block.OpWriteZeroes, block.OpDiscard:
			q.im.markDirty(r.Off, r.Len)
		}
	}
	return q.route(reqs)
}

// route sends reqs down the fast path, into a group, to the parked
// requests of their cluster, or to the slow path, and submits the fast
// ones to the device's queue.
func (q *Queue) route(reqs []*block.Req) error {
	q.batch = q.batch[:0]
	for _, r := range reqs {
		if r.Op == block.OpWrite && q.slowC[q.cluster(r)] > 0 {
			q.park(r)
			continue
		}
		if q.fast(r) {
			continue
		}
		if r.Op != block.OpWrite {
			q.goSlow([]*block.Req{r})
			continue
		}
		q.addGroup(r)
	}
	q.flushGroup()
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
// path must run it. It never blocks on another goroutine (A3): lookups
// only peek at cached L2 slices (peekXEntry), and locks are tried.
func (q *Queue) fast(r *block.Req) bool {
	im := q.im
	n := int64(len(r.Buf))
	// An external data file's reads take the slow path (DF4).
	if im.crypt != nil || im.df.ext || n == 0 || im.state.Load()&stClosed != 0 {
		return false
	}
	switch r.Op {
	case block.OpRead:
		if block.CheckRange(r.Off, n) != nil || uint64(r.Off+n) > im.vsize.Load() {
			return false
		}
		// As Readv: the lookup and the read inside the data gate (Q12);
		// the token is given back when the read is reaped.
		tok := im.gate.enter()
		kind, host, ok := q.peekRun(r.Off, n)
		switch {
		case !ok:
			im.gate.exit(tok)
			return false
		case kind == format.ClusterNormal:
			q.send(r, host, true, tok)
		case kind == format.ClusterZeroPlain || kind == format.ClusterZeroAlloc ||
			(kind == format.ClusterUnallocated && im.backing == nil):
			im.gate.exit(tok)
			clear(r.Buf)
			q.ready = append(q.ready, r)
		default:
			im.gate.exit(tok)
			return false
		}
		im.c.guestReads.Add(1)
		im.c.guestBytesRead.Add(n)
		im.c.queueFast.Add(1)
		return true
	case block.OpWrite:
		goff := guestOff(r.Off)
		cs := int64(im.g.ClusterSize)
		if im.checkWrite(r.Off, n) != nil || n > cs-r.Off%cs {
			return false
		}
		if blocker, _ := im.allocs.Conflict(im.g.GuestCluster(goff), 1); blocker != nil {
			blocker.Forget()
			return false
		}
		// As overwrite: the lookup and the write inside the data gate
		// (Q12); the token is given back when the write is reaped.
		tok := im.gate.enter()
		// The slow path waits (pausedForSnapshot), or refuses a write a
		// Shrink cut off after the size check above (Q18).
		if im.snapPause.Load() != nil || uint64(r.Off+n) > im.vsize.Load() {
			im.gate.exit(tok)
			return false
		}
		first, last := im.xsubRange(goff, n) // extended L2: the synchronous overwrite's test
		e, bm, ok := im.peekXEntry(goff)
		if !ok || e.Type() != format.ClusterNormal || !e.Copied() || im.overlapCheckData(e.Offset()) != nil ||
			(im.g.ExtendedL2 && !xallAllocated(e, bm, first, last)) {
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

// peekRun maps [off, off+n) with peekEntry (never blocking: Q14): ok
// when every cluster of it has one kind, host-contiguous for data, and
// every L2 slice it needs is cached. host is the first byte's host offset
// for ClusterNormal. With extended L2 (xpeekRun) the range must lie in
// one cluster and its subclusters have one type.
func (q *Queue) peekRun(off, n int64) (kind format.ClusterType, host format.HostOff, ok bool) {
	im := q.im
	g := &im.g
	if g.ExtendedL2 {
		return q.xpeekRun(off, n)
	}
	goff := guestOff(off)
	e, ok := im.peekEntry(goff)
	if !ok {
		return 0, 0, false
	}
	kind = e.Type()
	if kind == format.ClusterNormal {
		host = g.HostFor(e.Offset(), goff)
	}
	next := e.Offset() + format.HostOff(g.ClusterSize)
	for c := g.GuestClusterOff(g.GuestCluster(goff) + 1); c < guestOff(off+n); c += format.GuestOff(g.ClusterSize) {
		e2, ok := im.peekEntry(c)
		if !ok || e2.Type() != kind {
			return 0, 0, false
		}
		if kind == format.ClusterNormal {
			if e2.Offset() != next {
				return 0, 0, false
			}
			next += format.HostOff(g.ClusterSize)
		}
	}
	if kind == format.ClusterCompressed {
		return 0, 0, false
	}
	return kind, host, true
}

// send queues r's translated request for the device's queue.
func (q *Queue) send(r *block.Req, host format.HostOff, gate bool, tok uint64) {
	i := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	q.slots[i] = qslot{req: r, gate: gate, tok: tok}
	ir := &q.inReqs[i]
	*ir = block.Req{Op: r.Op, Off: int64(host), Buf: r.Buf, User: uint64(i)}
	q.batch = append(q.batch, ir)
}

// finish completes the translated request ir with err: the data gate's
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

func (q *Queue) cluster(r *block.Req) uint64 { return uint64(r.Off) >> q.im.g.ClusterBits }

// addGroup adds the slow write r to the group being built, or starts a
// new one: a group is writes that follow each other in one cluster.
func (q *Queue) addGroup(r *block.Req) {
	c := q.cluster(r)
	if k := len(q.group); k > 0 {
		last := q.group[k-1]
		if c == q.groupC && r.Off == last.Off+int64(len(last.Buf)) && k < maxGroup {
			q.group = append(q.group, r)
			return
		}
		q.flushGroup()
	}
	if q.slowC[c] > 0 {
		// The group just sent wrote into this cluster too.
		q.park(r)
		return
	}
	q.group = append(q.group, r)
	q.groupC = c
}

// maxGroup bounds a group's vector (IOV_MAX).
const maxGroup = 1024

// flushGroup sends the group to the slow path.
func (q *Queue) flushGroup() {
	if len(q.group) == 0 {
		return
	}
	g := append([]*block.Req(nil), q.group...)
	clear(q.group)
	q.group = q.group[:0]
	if q.slowC == nil {
		q.slowC, q.parked = map[uint64]int{}, map[uint64][]*block.Req{}
	}
	q.slowC[q.groupC] += len(g)
	if q.allocates(g) {
		q.toAlloc(g)
		return
	}
	q.goSlow(g)
}

func (q *Queue) park(r *block.Req) {
	c := q.cluster(r)
	q.parked[c] = append(q.parked[c], r)
	q.nparked++
}

// slowDone notes that the slow write r is back; the writes parked on its
// cluster go in again once none is out.
func (q *Queue) slowDone(r *block.Req) {
	if r.Op != block.OpWrite || q.slowC == nil {
		return
	}
	c := q.cluster(r)
	if q.slowC[c]--; q.slowC[c] > 0 {
		return
	}
	delete(q.slowC, c)
	if p := q.parked[c]; len(p) > 0 {
		delete(q.parked, c)
		q.nparked -= len(p)
		q.retry = append(q.retry, p...)
	}
}

// goSlow runs g through the image's synchronous methods on a goroutine
// (A4): one request, or a group of writes as one vector. A group that
// fails runs again request by request, so each gets its own result.
func (q *Queue) goSlow(g []*block.Req) {
	q.nslow += len(g)
	q.im.c.queueSlow.Add(int64(len(g)))
	q.slow.Go(func() {
		runSync(q.im, g)
		q.complete(g)
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
	if atLeast == 0 && q.inner.InFlight() > 0 {
		// A poll still takes what the device's queue has completed.
		k, err := q.inner.Wait(q.inOut, 0)
		for _, ir := range q.inOut[:k] {
			q.finish(ir, ir.Err)
		}
		clear(q.inOut[:k])
		if err != nil {
			return 0, err
		}
	}
	n := 0
	for {
		n += q.take(out[n:])
		if n >= atLeast || q.woken.Swap(false) {
			q.flight -= n
			return n, nil
		}
		// take may have sent parked writes in again, and those the
		// device's queue refused (or that read zeros) are ready at once.
		if q.done.Len() > 0 || len(q.ready) > 0 {
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

// take moves completed requests into out, and sends the writes parked
// behind slow ones that came back in again.
func (q *Queue) take(out []*block.Req) int {
	k := block.MoveReqs(out, &q.ready)
	s := q.done.Take(out[k:])
	q.nslow -= s
	for _, r := range out[k : k+s] {
		q.slowDone(r)
	}
	// Q22: marked at Submit, and again as they complete (a bitmap
	// cleared, added or enabled while they were in flight).
	if q.im.bitmaps.Load() != nil {
		for _, r := range out[:k+s] {
			switch r.Op {
			case block.OpWrite:
				q.im.markDirty(r.Off, int64(len(r.Buf)))
			case block.OpWriteZeroes, block.OpDiscard:
				q.im.markDirty(r.Off, r.Len)
			}
		}
	}
	if len(q.retry) > 0 {
		rs := q.retry
		q.retry = nil
		if err := q.route(rs); err != nil {
			for _, r := range rs {
				if r.Err == nil {
					r.Err = err
				}
			}
		}
	}
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
	// Every request is waited for, even past an error: requests in
	// flight hold buffers and locks (the data gate Q12, wmu U10).
	werr := block.Drain(q)
	q.stopAlloc()
	q.slow.Wait()
	q.closed = true
	err := errors.Join(werr, q.alloc.closeErr, q.inner.Close()) // the workers are done: no lock
	q.im.queues.Add(-1)
	return err
}
