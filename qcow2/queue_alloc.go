package qcow2

import (
	"sync"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// This file holds a Queue's allocator (Q16): allocating writes, which the
// owner cannot translate (Q14), go to two goroutines of the queue's own
// instead of a goroutine each, a planner and a writer, so that new
// clusters are planned and linked while earlier ones are being written:
//
//	planner  takes what has come in since its last round as one batch;
//	         plan: Image.mu once, register and plan every cluster
//	         (beginAllocLocked); runs the writes that need more than one
//	         plain write (copy-on-write, zeroing first) itself, while the
//	         writer has nothing in flight (allocHold); hands every
//	         plain one (plainFill) to the writer; and links what the
//	         writer hands back: seal each allocation, then Image.mu once,
//	         link every cluster (commitAllocLocked)
//	writer   owns a device queue: submits what the planner hands it and
//	         hands each allocation back as soon as its writes are reaped
//
// The writer is the only goroutine with writes in flight on its queue,
// and it never takes a lock that anyone holds for long, nor waits for
// anything but its own writes and the planner's hand-offs: a holder of
// mu may wait for the file's write lock (uring U1), which an in-flight
// O_DIRECT write holds until it is reaped, and only the writer reaps its
// writes. The planner takes mu and runs synchronous writes, but never
// has a write of its own in flight. A request the planner cannot
// allocate this way (the cluster is under another allocation, or was
// linked meanwhile) runs the synchronous path on a goroutine of its own.
//
// Before the writer, one goroutine did all of it a batch at a time
// (plan, write, reap every write, link): on a disk that served requests
// one at a time well, the device stood idle a third of the time between
// batches (perf/results/2026-11-30-alloc-pipeline).

// qalloc is the allocator's shared state; mu guards every field but
// kick, wkick and started.
type qalloc struct {
	mu       sync.Mutex
	pending  [][]*block.Req // groups (Q14: writes that follow each other in one cluster)
	in       []*qjob        // planned plain fills, for the writer
	back     []*qjob        // written (or failed), for the planner to link
	sleep    block.Queue    // the writer's queue while it waits in it for its writes
	stop     bool           // Close: the planner ends once the writer has no job of its
	wstop    bool           // the writer ends (the planner's word, with no job left there)
	closeErr error          // from closing the writer's device queue
	bufs     [][]byte       // the caller's registered buffers (Q17)
	bufGen   int            // bumped by each RegisterBuffers
	kick     chan struct{}  // cap 1: the planner has work (or is to stop); never closed
	wkick    chan struct{}  // cap 1: the writer has work (or is to stop)
	started  bool           // owner's: the goroutines run
}

// allocPlanner is the planner's own state.
type allocPlanner struct {
	free  []*qjob // jobs to reuse
	jobs  []*qjob
	link  []*qjob
	batch [][]*block.Req
	back  []*qjob
	out   int     // jobs handed to the writer and not back yet
	held  []*qjob // planned, waiting for the writer to have no job (allocHold)
}

// qjob is one group: planned by the planner, written by it or by the
// writer, then linked by the planner.
type qjob struct {
	g     []*block.Req
	n     int64
	p     allocation // p.reg != nil: planned (and registered)
	x     xl2Alloc   // with extended L2: the subclusters p writes
	w     fillWrite  // plain: the write that fills the cluster
	plain bool
	zero  bool     // the bytes around the data read as zeros (zeroAround)
	v     [][]byte // the data, as one vector
	cowed bool
	werr  error // the data write
	err   error // the outcome
	sync  bool  // runs the synchronous path
	lost  bool  // its write may still land: the cluster is leaked
	left  int   // the writer's: writes of it still in flight
	early int   // from seal: early writes into the new cluster that succeeded
}

// allocates reports whether the group g goes to the allocator: writes
// inside one cluster of an image without encryption (its own write path
// runs synchronously) that need a new cluster or, with extended L2, a
// subcluster allocated, as far as the cached L2 slices tell (peekEntry,
// peekXEntry; a miss or an overwrite runs the synchronous path, so the
// allocator never waits for a table load that is not its own work).
func (q *Queue) allocates(g []*block.Req) bool {
	im := q.im
	if im.crypt != nil || im.df.ext { // a data file's writes: the synchronous path (DF4)
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
		a.wkick = make(chan struct{}, 1)
		q.slow.Go(q.allocLoop)
		q.slow.Go(q.allocWriter)
	}
	a.mu.Lock()
	a.pending = append(a.pending, g)
	a.mu.Unlock()
	kick(a.kick)
}

// stopAlloc tells the allocator's goroutines to end (Close, before it
// waits for the queue's goroutines): the planner once every job it
// handed the writer is back (even if Close gave up waiting for its
// requests), then the writer, which closes its device queue and leaves
// the error in closeErr. Neither channel is closed: the writer may still
// be kicking the planner.
func (q *Queue) stopAlloc() {
	if a := &q.alloc; a.started {
		a.mu.Lock()
		a.stop = true
		a.mu.Unlock()
		kick(a.kick)
	}
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// allocLoop is the planner: each round links what the writer handed
// back, then plans every group that came in since the last one as a
// batch, until the queue closes and the writer has no job of its; then
// it stops the writer.
func (q *Queue) allocLoop() {
	a := &q.alloc
	var p allocPlanner
	for stop := false; !stop || p.out > 0 || len(p.held) > 0; {
		<-a.kick
		for {
			a.mu.Lock()
			batch, back := a.pending, a.back
			a.pending, a.back = p.batch[:0], p.back[:0]
			stop = a.stop
			a.mu.Unlock()
			if len(batch) == 0 && len(back) == 0 {
				p.batch, p.back = batch, back
				break
			}
			if len(back) > 0 {
				p.out -= len(back)
				q.allocLink(back)
				q.allocDone(&p, back)
			}
			if p.out == 0 && len(p.held) > 0 {
				held := p.held
				p.held = nil
				q.allocWrite(&p, held)
			}
			if len(batch) > 0 {
				q.allocBatch(&p, batch)
			}
			clear(batch)
			clear(back)
			p.batch, p.back = batch[:0], back[:0]
		}
	}
	a.mu.Lock()
	a.wstop = true
	s := a.sleep
	a.mu.Unlock()
	kick(a.wkick)
	if s != nil {
		s.Wake()
	}
}

// allocBatch plans one batch of groups, runs the writes that are not
// plain fills, hands the plain ones to the writer, and links and
// completes what does not wait for it.
func (q *Queue) allocBatch(pl *allocPlanner, batch [][]*block.Req) {
	im := q.im
	jobs := pl.jobs[:0]
	for _, g := range batch {
		var j *qjob
		if n := len(pl.free); n > 0 {
			j, pl.free = pl.free[n-1], pl.free[:n-1]
		} else {
			j = new(qjob)
		}
		*j = qjob{g: g, n: groupLen(g)}
		jobs = append(jobs, j)
	}

	// Plan, under one hold of mu.
	xl2 := im.g.ExtendedL2
	im.mu.Lock()
	for _, j := range jobs {
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

	// How each planned job is written: one plain write (the writer's),
	// or more (the planner's own, below).
	own := false
	for _, j := range jobs {
		if j.p.reg == nil {
			continue
		}
		j.v = groupVec(j.g)
		if xl2 {
			j.zero = im.xzeroAround(&j.p, &j.x, j.n)
			j.w, j.plain = im.xplainFill(&j.p, &j.x, j.v, j.n, j.zero)
		} else {
			j.zero = im.zeroAround(&j.p, j.n)
			j.w, j.plain = im.plainFill(&j.p, j.v, j.n, j.zero, false)
		}
		own = own || !j.plain
	}
	if own && pl.out > 0 || len(pl.held) > 0 {
		q.allocHold(pl, jobs)
		clear(jobs)
		pl.jobs = jobs[:0]
		return
	}
	q.allocWrite(pl, jobs)
	clear(jobs)
	pl.jobs = jobs[:0]
}

// allocHold keeps the planned jobs of a batch until the writer has no
// job (allocLoop then writes them) and completes the others. The
// planner's own writes may wait for the file's write lock, which the
// writer's writes in flight hold until they are reaped (uring U10); if
// the writer's queue fails for good, those writes are lost and never
// reaped, and a planner waiting for the lock would wait for ever,
// never linking what the writer hands back (found in review,
// 2026-11-30). So the planner writes only while the writer has nothing
// in flight, and later batches wait behind held jobs, so that a stream
// of plain fills cannot keep it from ever writing.
func (q *Queue) allocHold(pl *allocPlanner, jobs []*qjob) {
	done := pl.link[:0]
	for _, j := range jobs {
		if j.p.reg == nil {
			done = append(done, j)
		} else {
			pl.held = append(pl.held, j)
		}
	}
	q.allocDone(pl, done)
	clear(done)
	pl.link = done[:0]
}

// allocWrite writes planned jobs (and completes those that were not
// planned): the ways that take more than one plain write here, while
// the writer has nothing in flight (allocHold), and the plain ones
// through the writer; it links and completes what does not wait for the
// writer. After the image lost writes (Q16), held jobs are not written:
// they fail with ErrWritesLost.
func (q *Queue) allocWrite(pl *allocPlanner, jobs []*qjob) {
	im := q.im
	xl2 := im.g.ExtendedL2
	lost := im.state.Load()&stLost != 0
	link := pl.link[:0]
	nplain := 0
	for _, j := range jobs {
		switch {
		case j.p.reg == nil:
			continue
		case lost:
			j.werr, j.plain = im.lostErr, false
		case j.plain:
			nplain++
			continue
		case xl2:
			j.cowed, j.werr = im.xwriteWithCOWZero(&j.p, &j.x, j.v, j.n, j.zero)
		default:
			j.cowed, j.werr = im.writeWithCOWZero(&j.p, j.v, j.n, j.zero)
		}
		link = append(link, j)
	}
	if nplain > 0 {
		a := &q.alloc
		a.mu.Lock()
		for _, j := range jobs {
			if j.plain {
				a.in = append(a.in, j)
			}
		}
		pl.out += nplain
		s := a.sleep
		a.mu.Unlock()
		kick(a.wkick)
		if s != nil {
			s.Wake()
		}
	}
	if len(link) > 0 {
		q.allocLink(link)
	}

	// Complete what is done here: what could not be allocated here, or
	// failed, and what was linked above. Jobs the writer has are the
	// writer's until it hands them back.
	done := link
	for _, j := range jobs {
		if j.p.reg == nil {
			done = append(done, j)
		}
	}
	q.allocDone(pl, done)
	clear(done)
	pl.link = done[:0]
}

// allocLink links the written (or failed) allocations of jobs: seal
// each (Q10), commit all under one hold of mu, then let the clusters go.
func (q *Queue) allocLink(jobs []*qjob) {
	im := q.im
	xl2 := im.g.ExtendedL2
	for _, j := range jobs {
		if j.werr == nil && !xl2 { // xl2: never ready (xl2write.go)
			j.p.st.ready.Store(true)
		}
	}
	if im.readyPause != nil {
		im.readyPause()
	}
	for _, j := range jobs {
		j.early = j.p.st.seal()
	}
	var lost error
	im.mu.Lock()
	for _, j := range jobs {
		switch {
		case j.lost:
			// Its write may still land: neither linked (it could
			// land over later data) nor given back (another cluster
			// could be placed there). Early writers are told it failed.
			j.p.st.finish(j.werr)
			j.err = j.werr
			if lost == nil {
				lost = j.werr
			}
		case xl2:
			j.err = im.xcommitAllocLocked(&j.p, &j.x, j.cowed || j.w.cowed, j.werr, j.early)
		default:
			j.err = im.commitAllocLocked(&j.p, j.cowed || j.w.cowed, j.werr, j.early)
		}
	}
	if lost != nil {
		im.loseWritesLocked(lost)
	}
	im.mu.Unlock()
	for _, j := range jobs {
		im.allocs.Release(j.p.reg)
	}
}

// allocDone completes the requests of jobs (linked, or never planned)
// and keeps the jobs for reuse. A group that could not be allocated
// here, or failed (then request by request, so each gets its own
// result), runs the synchronous path on a goroutine of its own.
func (q *Queue) allocDone(pl *allocPlanner, jobs []*qjob) {
	im := q.im
	for _, j := range jobs {
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
		} else {
			for _, r := range j.g {
				r.Err = j.err
				q.done.Put(r)
			}
		}
		*j = qjob{}
		pl.free = append(pl.free, j)
	}
	if len(jobs) > 0 {
		q.wakeOwner()
	}
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
// request, so each gets its own result. A panic fails the request it
// happened in (block A4).
func runSync(im *Image, g []*block.Req) {
	if len(g) == 1 {
		g[0].Err = block.Do(im, g[0])
		return
	}
	if err := writevGroup(im, g); err == nil {
		for _, r := range g {
			r.Err = nil
		}
		return
	}
	for _, r := range g {
		r.Err = block.Do(im, r)
	}
}

// writevGroup writes the group g as one vector; a panic is its error.
func writevGroup(im *Image, g []*block.Req) (err error) {
	defer block.RecoverInto(&err)
	return im.Writev(g[0].Off, groupVec(g))
}
