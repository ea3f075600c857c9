package qcow2

import (
	"errors"
	"sync"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// This file holds a Queue's allocator (Q16): allocating writes, which the
// owner cannot translate (Q14), go to one goroutine of the queue's own
// instead of a goroutine each. It takes what has come in since its last
// round as one batch and runs it in three phases:
//
//	plan   Image.mu once: register and plan every cluster (beginAllocLocked)
//	write  no lock: the writes that need more than one plain write
//	       (copy-on-write, zeroing first) run synchronously; then every
//	       plain one (plainFill) goes to a device queue of the
//	       allocator's own in one submission, and all are reaped
//	link   seal each allocation, then Image.mu once: link every cluster
//	       (commitAllocLocked)
//
// It never holds mu, or takes it, with writes in flight: a holder of mu
// may wait for the file's write lock (uring U1), which an in-flight
// O_DIRECT write holds until it is reaped, and only the allocator reaps
// its writes. A request it cannot allocate this way (the cluster is
// under someone else's allocation, or was linked meanwhile) runs the
// synchronous path after the batch, when the allocator holds nothing.

// qalloc is the allocator's shared state: allocWorkers goroutines take
// batches from pending. mu guards pending and closeErr.
type qalloc struct {
	mu       sync.Mutex
	pending  [][]*block.Req // groups (Q14: writes that follow each other in one cluster)
	closeErr error          // from closing the workers' device queues
	bufs     [][]byte       // the caller's registered buffers (Q17)
	bufGen   int            // bumped by each RegisterBuffers
	kick     chan struct{}  // cap 1; closed to stop the workers
	started  bool           // owner's: the workers run
}

// allocWorkers is how many allocator goroutines a queue runs. Two let
// one plan and link a batch while the other is in the kernel with its
// writes (on a RAM disk the whole cost of a write into a new extent is
// paid there, synchronously), but on ext4 over zram they cost 20-30 %
// more CPU (the file system's locks) for the same time or 10 % less
// (allocation-heavy, 4 interleaved runs): one it is.
const allocWorkers = 1

// allocWorker is one allocator goroutine's own state.
type allocWorker struct {
	inner block.Queue // its device queue, opened on first use
	err   error       // from opening inner, or it failed: later writes fail with it
	bufs  [][]byte    // the caller's buffers as of this batch (Q17) ...
	gen   int         // ... their generation
	regd  int         // the generation registered on inner
	jobs  []qjob
	order []int
	reqs  []block.Req
	out   []*block.Req
}

// qjob is one group in an allocator batch.
type qjob struct {
	g     []*block.Req
	n     int64
	p     allocation // p.reg != nil: planned (and registered)
	x     xl2Alloc   // with extended L2: the subclusters p writes
	w     fillWrite  // plain: the write that fills the cluster
	plain bool
	cowed bool
	werr  error // the data write
	err   error // the outcome
	sync  bool  // runs the synchronous path after the batch
	sent  bool  // every write of it went to the device's queue
	lost  bool  // its write may still land: the cluster is leaked
}

// allocates reports whether the group g goes to the allocator: writes
// inside one cluster of an image without encryption (its own write path
// runs synchronously) that need a new cluster or, with extended L2, a
// subcluster allocated, as far as the cached L2 slices tell (peekEntry,
// peekXEntry; a miss or an overwrite runs the synchronous path, so the
// allocator never waits for a table load that is not its own work).
func (q *Queue) allocates(g []*block.Req) bool {
	im := q.im
	if im.crypt != nil {
		return false
	}
	for _, r := range g {
		if r.Op != block.OpWrite || len(r.Buf) == 0 {
			return false
		}
	}
	last := g[len(g)-1]
	if q.cluster(g[0]) != uint64(last.Off+int64(len(last.Buf))-1)>>im.g.ClusterBits {
		return false
	}
	goff := guestOff(g[0].Off)
	if im.g.ExtendedL2 {
		e, bm, ok := im.peekXEntry(goff)
		a, b := im.xsubRange(goff, groupLen(g))
		return ok && !xallAllocated(e, bm, a, b)
	}
	e, ok := im.peekEntry(goff)
	return ok && !(e.Type() == format.ClusterNormal && e.Copied())
}

// toAlloc hands the group g to the allocator (owner only).
func (q *Queue) toAlloc(g []*block.Req) {
	a := &q.alloc
	q.nslow += len(g)
	q.im.c.queueAlloc.Add(int64(len(g)))
	if !a.started {
		a.started = true
		a.kick = make(chan struct{}, 1)
		for range allocWorkers {
			q.slow.Go(q.allocLoop)
		}
	}
	a.mu.Lock()
	a.pending = append(a.pending, g)
	a.mu.Unlock()
	kick(a.kick)
}

// stopAlloc tells the allocator goroutines to end (Close, once no
// request is in flight, before it waits for the queue's goroutines);
// they close their device queues and leave the errors in closeErr.
func (q *Queue) stopAlloc() {
	if a := &q.alloc; a.started {
		close(a.kick)
	}
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// allocLoop is an allocator goroutine: each round takes every group that
// came in since the last one as a batch, until the queue closes.
func (q *Queue) allocLoop() {
	a := &q.alloc
	var w allocWorker
	for range a.kick {
		a.mu.Lock()
		batch := a.pending
		a.pending = nil
		w.bufs, w.gen = a.bufs, a.bufGen
		a.mu.Unlock()
		if len(batch) > 0 {
			q.allocBatch(&w, batch)
		}
	}
	if w.inner != nil {
		err := w.inner.Close()
		a.mu.Lock()
		a.closeErr = errors.Join(a.closeErr, err)
		a.mu.Unlock()
	}
}

// allocBatch runs one batch of groups through the three phases and
// completes their requests.
func (q *Queue) allocBatch(a *allocWorker, batch [][]*block.Req) {
	im := q.im
	jobs := a.jobs[:0]
	for _, g := range batch {
		jobs = append(jobs, qjob{g: g, n: groupLen(g)})
	}
	a.jobs = jobs

	// Plan, under one hold of mu.
	xl2 := im.g.ExtendedL2
	im.mu.Lock()
	for i := range jobs {
		j := &jobs[i]
		if j.err = im.checkWrite(j.g[0].Off, j.n); j.err != nil {
			continue
		}
		var (
			p       allocation
			blocker *sched.Alloc[allocState]
			err     error
		)
		if xl2 {
			p, j.x, blocker, err = im.xbeginAllocLocked(guestOff(j.g[0].Off), j.n)
		} else {
			p, blocker, err = im.beginAllocLocked(guestOff(j.g[0].Off))
		}
		switch {
		case blocker != nil:
			blocker.Forget()
			j.sync = true
		case err != nil:
			j.err = err
		case p.reg == nil:
			j.sync = true // linked (or its subclusters) meanwhile: an overwrite
		default:
			j.p = p
			im.c.guestWrites.Add(1)
			im.c.guestBytesWritten.Add(j.n)
		}
	}
	im.mu.Unlock()

	// Write: the synchronous ways first, so nothing is in flight while
	// they run (they may take the file's write lock), then the plain
	// ones through the allocator's device queue.
	nplain := 0
	for i := range jobs {
		j := &jobs[i]
		if j.p.reg == nil {
			continue
		}
		v := groupVec(j.g)
		if xl2 {
			zero := im.xzeroAround(&j.p, &j.x, j.n)
			if j.w, j.plain = im.xplainFill(&j.p, &j.x, v, j.n, zero); j.plain {
				nplain++
				continue
			}
			j.cowed, j.werr = im.xwriteWithCOWZero(&j.p, &j.x, v, j.n, zero)
			continue
		}
		zero := im.zeroAround(&j.p, j.n)
		if j.w, j.plain = im.plainFill(&j.p, v, j.n, zero, false); j.plain {
			nplain++
			continue
		}
		j.cowed, j.werr = im.writeWithCOWZero(&j.p, v, j.n, zero)
	}
	if nplain > 0 {
		q.allocWrite(a, jobs)
	}

	// Link: seal each allocation (Q10), then commit all under one hold
	// of mu, then let the clusters go.
	early := make([]int, len(jobs))
	lost := false
	for i := range jobs {
		j := &jobs[i]
		if j.p.reg == nil {
			continue
		}
		if j.werr == nil && !xl2 { // xl2: never ready (xl2write.go)
			j.p.st.ready.Store(true)
		}
		early[i] = j.p.st.seal()
	}
	im.mu.Lock()
	for i := range jobs {
		j := &jobs[i]
		switch {
		case j.p.reg == nil:
		case j.lost:
			// Its write may still land: neither linked (it could
			// land over later data) nor given back (another cluster
			// could be placed there). Early writers are told it failed.
			j.p.st.finish(j.werr)
			j.err = j.werr
			lost = true
		case xl2:
			j.err = im.xcommitAllocLocked(&j.p, &j.x, j.cowed || j.w.cowed, j.werr, early[i])
		default:
			j.err = im.commitAllocLocked(&j.p, j.cowed || j.w.cowed, j.werr, early[i])
		}
	}
	if lost {
		im.loseWritesLocked()
	}
	im.mu.Unlock()
	for i := range jobs {
		if j := &jobs[i]; j.p.reg != nil {
			im.allocs.Release(j.p.reg)
		}
	}

	// Complete what is done here; a group that could not be allocated
	// here, or failed (then request by request, so each gets its own
	// result), runs the synchronous path on a goroutine of its own.
	for i := range jobs {
		j := &jobs[i]
		if j.sync || (j.err != nil && len(j.g) > 1 && !j.lost) {
			if j.p.reg != nil {
				// Counted in the plan; runSync counts it again.
				im.c.guestWrites.Add(-1)
				im.c.guestBytesWritten.Add(-j.n)
			}
			g := j.g
			im.c.queueAllocSync.Add(int64(len(g)))
			q.slow.Go(func() {
				runSync(im, g)
				q.complete(g)
			})
			continue
		}
		for _, r := range j.g {
			r.Err = j.err
			q.done.Put(r)
		}
	}
	clear(jobs)
	q.wakeOwner()
}

// complete hands the requests of g to the owner (A4, A5).
func (q *Queue) complete(g []*block.Req) {
	for _, r := range g {
		q.done.Put(r)
	}
	q.wakeOwner()
}

// wakeOwner tells the owner that completions are waiting (A5).
func (q *Queue) wakeOwner() {
	q.signal()
	q.inner.Wake()
}

// allocWrite sends the plain writes of jobs to the allocator's device
// queue and reaps them all; each job gets its first error. A vector
// queue that cannot be opened gives way to a GoQueue (the device's own
// synchronous writes on goroutines).
func (q *Queue) allocWrite(a *allocWorker, jobs []qjob) {
	if a.inner == nil && a.err == nil {
		inner, err := block.NewVecQueue(q.im.dev, allocDepth)
		if err != nil {
			gq, gerr := block.NewGoQueue(q.im.dev, allocDepth)
			inner, err = gq, gerr
			if gerr != nil {
				inner = nil // not a nil *GoQueue in the interface
			}
		}
		a.inner, a.err = inner, err
		a.reqs = make([]block.Req, allocDepth)
		a.out = make([]*block.Req, allocDepth)
	}
	if a.err == nil && a.regd != a.gen {
		a.registerBufs()
	}
	if a.err != nil {
		for i := range jobs {
			if jobs[i].plain {
				jobs[i].werr = a.err
			}
		}
		return
	}
	q.allocSend(a, jobs)
	// A job none of whose writes went out (the queue failed for good
	// before) wrote nothing: it fails, and can be undone.
	for i := range jobs {
		if j := &jobs[i]; j.plain && !j.sent && j.werr == nil {
			j.werr = a.err
		}
	}
}

// allocSend is allocWrite's submission and reaping.
func (q *Queue) allocSend(a *allocWorker, jobs []qjob) {
	free := make([]int, 0, allocDepth)
	for i := allocDepth - 1; i >= 0; i-- {
		free = append(free, i)
	}
	tries := 0
	reap := func(min int) bool {
		k, err := a.inner.Wait(a.out, min)
		for _, ir := range a.out[:k] {
			j := &jobs[ir.User>>32]
			if ir.Err != nil && j.werr == nil {
				j.werr = ir.Err
			}
			free = append(free, int(ir.User&0xffffffff))
			*ir = block.Req{}
		}
		clear(a.out[:k])
		if err == nil || k > 0 {
			tries = 0
			return true
		}
		if tries++; tries < 1000 {
			time.Sleep(time.Millisecond)
			return true
		}
		// The device's queue keeps failing with writes in flight: they
		// may still land (lost: their clusters are neither linked nor
		// freed, and the image takes no more writes).
		for _, r := range a.reqs {
			if r.Buf != nil {
				j := &jobs[r.User>>32]
				j.lost, j.werr = true, errors.Join(err, j.werr)
			}
		}
		a.err = err // and the slots stay the queue's
		return false
	}
	batch := make([]*block.Req, 0, allocDepth)
	submit := func() {
		if len(batch) == 0 {
			return
		}
		if err := a.inner.Submit(batch...); err != nil {
			for _, ir := range batch {
				j := &jobs[ir.User>>32]
				if j.werr == nil {
					j.werr = err
				}
				free = append(free, int(ir.User&0xffffffff))
				a.reqs[ir.User&0xffffffff] = block.Req{}
			}
		}
		batch = batch[:0]
	}
	// Each job's vector goes in one Submit, so it reaches the device as
	// one request (block.VecQueuer), unless it is longer than the room
	// left. Where the device does not merge adjacent writes (B10), the
	// writes of different jobs must stay apart too: a job that starts
	// where the one before it in the Submit ends waits for a later
	// round of the same Submit.
	merges := q.im.dcap.MergesWrites
	order := a.order[:0]
	for i := range jobs {
		if jobs[i].plain {
			order = append(order, i)
		}
	}
	end := int64(-1)
	for len(order) > 0 {
		later := order[:0]
		for _, i := range order {
			j := &jobs[i]
			if !merges && j.w.off == end {
				later = append(later, i)
				continue
			}
			if len(free) < len(j.w.vec) {
				submit()
			}
			off := j.w.off
			for _, b := range j.w.vec {
				for len(free) == 0 {
					submit()
					if !reap(1) {
						return
					}
				}
				s := free[len(free)-1]
				free = free[:len(free)-1]
				a.reqs[s] = block.Req{Op: block.OpWrite, Off: off, Buf: b, User: uint64(i)<<32 | uint64(s)}
				batch = append(batch, &a.reqs[s])
				off += int64(len(b))
			}
			j.sent = true
			end = off
		}
		if len(later) == len(order) {
			submit() // the first of them continues the last job sent
			end = -1
		}
		order = later
	}
	a.order = order
	submit()
	for a.inner.InFlight() > 0 && reap(a.inner.InFlight()) {
	}
}

// allocDepth is the allocator's device queue depth: plain writes of a
// batch beyond it wait for room.
const allocDepth = 256

func groupLen(g []*block.Req) int64 {
	var n int64
	for _, r := range g {
		n += int64(len(r.Buf))
	}
	return n
}

func groupVec(g []*block.Req) [][]byte {
	v := make([][]byte, len(g))
	for i, r := range g {
		v[i] = r.Buf
	}
	return v
}

// runSync runs the group g through the image's synchronous methods: one
// request, or the group as one vector and, if that fails, request by
// request, so each gets its own result.
func runSync(im *Image, g []*block.Req) {
	if len(g) == 1 {
		g[0].Err = block.Do(im, g[0])
		return
	}
	if err := im.Writev(g[0].Off, groupVec(g)); err == nil {
		for _, r := range g {
			r.Err = nil
		}
		return
	}
	for _, r := range g {
		r.Err = block.Do(im, r)
	}
}
