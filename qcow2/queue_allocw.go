package qcow2

import (
	"errors"
	"time"

	"github.com/qring/qring/block"
)

// This file holds the writer of a Queue's allocator (Q16,
// queue_alloc.go): the one goroutine with the allocator's plain fills in
// flight. It takes the planner's jobs, submits them to a device queue of
// its own, waits only in that queue (the planner wakes it there), and
// hands each job back as soon as its last write is reaped.

// allocWriter is the writer's own state.
type allocWriter struct {
	inner block.Queue // its device queue, opened on first use
	err   error       // from opening inner, or it failed: later writes fail with it
	bufs  [][]byte    // the caller's buffers as of this batch (Q17) ...
	gen   int         // ... their generation
	regd  int         // the generation registered on inner
	reqs  []block.Req // slots; a slot's User is its index
	jobOf []*qjob     // the job of each slot in use
	free  []int       // free slots
	n     int         // slots in flight (not counting lost ones)
	out   []*block.Req
	order []*qjob
	later []*qjob
	batch []*block.Req
	done  []*qjob // to hand back
	in    []*qjob
	tries int // failed Waits in a row
}

// allocDepth is the writer's device queue depth: plain writes beyond it
// wait for room.
var allocDepth = 256 // a variable only for tests

// allocWriter is the writer goroutine: until told to stop with nothing
// in flight, it sends what the planner handed it, else reaps its writes
// (waiting in its queue), else waits for work.
func (q *Queue) allocWriter() {
	a := &q.alloc
	var w allocWriter
	for {
		a.mu.Lock()
		in := a.in
		a.in = w.in[:0]
		stop := a.wstop
		w.bufs, w.gen = a.bufs, a.bufGen
		sleep := len(in) == 0 && w.n > 0
		if sleep {
			a.sleep = w.inner // woken there by a hand-off or the stop
		}
		a.mu.Unlock()
		switch {
		case len(in) > 0:
			q.allocSend(&w, in)
		case sleep:
			w.reap(1)
			a.mu.Lock()
			a.sleep = nil
			a.mu.Unlock()
		case stop:
			if w.inner != nil {
				err := w.inner.Close()
				a.mu.Lock()
				a.closeErr = errors.Join(a.closeErr, err)
				a.mu.Unlock()
			}
			return
		default:
			<-a.wkick
		}
		clear(in)
		w.in = in[:0] // the spare: a.in has the other one
		w.handBack(a)
	}
}

// handBack hands the jobs that are done to the planner.
func (w *allocWriter) handBack(a *qalloc) {
	if len(w.done) == 0 {
		return
	}
	a.mu.Lock()
	a.back = append(a.back, w.done...)
	a.mu.Unlock()
	kick(a.kick)
	clear(w.done)
	w.done = w.done[:0]
}

// open opens the writer's device queue on first use. A vector queue that
// cannot be opened gives way to a GoQueue (the device's own synchronous
// writes on goroutines).
func (w *allocWriter) open(dev block.Device) {
	if w.inner != nil || w.err != nil {
		return
	}
	inner, err := block.NewVecQueue(dev, allocDepth)
	if err != nil {
		gq, gerr := block.NewGoQueue(dev, allocDepth)
		inner, err = gq, gerr
		if gerr != nil {
			inner = nil // not a nil *GoQueue in the interface
		}
	}
	w.inner, w.err = inner, err
	w.reqs = make([]block.Req, allocDepth)
	w.jobOf = make([]*qjob, allocDepth)
	w.out = make([]*block.Req, allocDepth)
	for i := allocDepth - 1; i >= 0; i-- {
		w.free = append(w.free, i)
	}
}

// reap waits for at least min of the writer's writes (or a wake-up) and
// takes what completed; a job whose last write is back is done. It
// reports false when the device's queue failed for good: then every
// write in flight is lost.
func (w *allocWriter) reap(min int) bool {
	k, err := w.inner.Wait(w.out, min)
	for _, ir := range w.out[:k] {
		s := int(ir.User)
		j := w.jobOf[s]
		if ir.Err != nil && j.werr == nil {
			j.werr = ir.Err
		}
		w.jobOf[s] = nil
		*ir = block.Req{}
		w.free = append(w.free, s)
		w.n--
		if j.left--; j.left == 0 {
			w.done = append(w.done, j)
		}
	}
	clear(w.out[:k])
	if k > 0 {
		w.tries = 0
		return true
	}
	if err == nil { // woken: no failure, and no progress either
		return true
	}
	if w.tries++; w.tries < 1000 {
		time.Sleep(time.Millisecond)
		return true
	}
	// The device's queue keeps failing with writes in flight: they may
	// still land (lost: their clusters are neither linked nor freed,
	// and the image takes no more writes). The slots stay the queue's.
	for s, j := range w.jobOf {
		if j == nil {
			continue
		}
		w.jobOf[s] = nil
		if !j.lost {
			j.lost, j.werr = true, errors.Join(err, j.werr)
		}
		if j.left--; j.left == 0 {
			w.done = append(w.done, j)
		}
	}
	w.n = 0
	w.err = err
	return false
}

// allocSend submits the plain fills of jobs, reaping when the slots run
// out; each job gets its first error.
func (q *Queue) allocSend(w *allocWriter, jobs []*qjob) {
	w.open(q.im.dev)
	if w.err == nil && w.regd != w.gen {
		w.registerBufs()
	}
	// Each job's vector goes in one Submit, so it reaches the device as
	// one request (block.VecQueuer), unless it is longer than the room
	// left. Where the device does not merge adjacent writes (B10), the
	// writes of different jobs must stay apart too: a job that starts
	// where the one before it in the Submit ends waits for a later
	// round of the same Submit.
	merges := q.im.dcap.MergesWrites
	order := append(w.order[:0], jobs...)
	end := int64(-1)
	for len(order) > 0 {
		later := w.later[:0]
		for _, j := range order {
			if !merges && j.w.off == end && w.err == nil {
				later = append(later, j)
				continue
			}
			if len(w.free) < len(j.w.vec) {
				w.submit()
			}
			// While its writes go out, j holds one more count, so a
			// reap that takes its first ones does not hand it back.
			j.left++
			off := j.w.off
			for _, b := range j.w.vec {
				for len(w.free) == 0 && w.err == nil {
					w.submit()
					w.reap(1)
					w.handBack(&q.alloc)
				}
				if w.err != nil {
					// The queue failed for good, before j or with
					// writes of it in flight (lost, reap): what did
					// not go out never will.
					if j.werr == nil {
						j.werr = w.err
					}
					break
				}
				s := w.free[len(w.free)-1]
				w.free = w.free[:len(w.free)-1]
				w.reqs[s] = block.Req{Op: block.OpWrite, Off: off, Buf: b, User: uint64(s)}
				w.jobOf[s] = j
				j.left++
				w.n++
				w.batch = append(w.batch, &w.reqs[s])
				off += int64(len(b))
			}
			if j.left--; j.left == 0 {
				w.done = append(w.done, j)
			}
			end = off
		}
		if len(later) == len(order) {
			w.submit() // the first of them continues the last job sent
			end = -1
		}
		w.later = order[:0]
		order = later
	}
	w.order = order[:0]
	w.submit()
}

// submit submits the batch; a refusal fails its writes (they never went
// out) and gives their slots back.
func (w *allocWriter) submit() {
	if len(w.batch) == 0 {
		return
	}
	if err := w.inner.Submit(w.batch...); err != nil {
		for _, ir := range w.batch {
			s := int(ir.User)
			j := w.jobOf[s]
			if j.werr == nil {
				j.werr = err
			}
			w.jobOf[s] = nil
			w.reqs[s] = block.Req{}
			w.free = append(w.free, s)
			w.n--
			if j.left--; j.left == 0 {
				w.done = append(w.done, j)
			}
		}
	}
	clear(w.batch)
	w.batch = w.batch[:0]
}
