package nbd

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qring/qring/block"
)

// The queued path. On a device with an asynchronous queue of its own
// (block.Queuer: a qcow2 image, a uring.File on io_uring) a connection's
// READ and WRITE requests do not each run the synchronous path on a
// worker goroutine: they go to one block.Queue per connection, whose
// owner goroutine submits them in batches and reaps their completions in
// batches, as qemu-nbd's one thread with its AIO context does; a replier
// goroutine writes the replies of each reaped batch with one flush.
// Nothing runs per request, so a request is handed from goroutine to
// goroutine twice per batch (reader to owner, owner to replier) instead
// of three or four times per request (reader to worker, ring leader to
// waiter, reply lock, budget), and the requests of a connection do not
// wait as runnable goroutines in the Go scheduler's run queues: with a
// goroutine per request in flight, one whose P's thread the kernel had
// preempted (a client on the same CPUs) waited there for milliseconds,
// which made qnbd's p99.9 on random 4 KiB reads at QD64 2.5-4x
// qemu-nbd's (ext4 over zram, 2 vCPUs).
//
// The owner never waits for the client: a client slow to read its
// replies blocks the replier, while the owner goes on reaping (block A3),
// so the requests it completed do not hold the device (a qcow2 image's
// data gate, which TRIM and WRITE_ZEROES on every connection wait for).
// What the client has not read is bounded by the budget, which a reply
// gives back only once it is written.
//
// What the queue does not take runs on the workers as before: FLUSH,
// TRIM, WRITE_ZEROES, BLOCK_STATUS, CACHE, a WRITE with FUA or one that
// DetectZeroes may turn into a zeroing, a READ of length 0, and, with
// structured replies and a StatusSource, a READ whose range is not data
// throughout (its reply has OFFSET_HOLE chunks). A queued request means
// what the Device method means (block A2), so the mix changes no result:
// a FLUSH covers every write whose reply was sent before it, wherever it
// ran.
//
// The owner never calls the device's synchronous methods (block A3: a
// worker's WRITE_ZEROES or TRIM may wait for the queue's requests, which
// only the owner reaps); the reader looks up the extent of a READ.

// qreq is one request on the queue, with what its reply needs.
type qreq struct {
	req  block.Req // req.User is the slot in qpath.slots
	r    request
	n    int64  // the budget it holds
	buf  []byte // pooled: a WRITE's payload, a READ's buffer
	slot int
}

// qpath is a connection's queue and its owner's state.
type qpath struct {
	c *conn
	q block.Queue

	// The reader sends requests on in (buffered for MaxInFlight: the
	// budget bounds what is out, so the reader never blocks on it) and
	// wakes the owner when it may be blocked in Wait (waiting). pending
	// counts requests sent and not yet received.
	in      chan *qreq
	pending atomic.Int32
	waiting atomic.Bool
	free    chan *qreq // spent qreqs for the reader to reuse

	// The owner hands the requests it reaped to the replier, which
	// writes their replies: a client slow to read them (a full socket)
	// must not keep the owner from reaping (block A3), since a request
	// a qcow2 image's queue has completed holds the image's data gate
	// until it is reaped, and discards and zeroings on every connection
	// wait for that gate. rmu guards rlist and rstop.
	rmu   sync.Mutex
	rlist []*qreq
	rstop bool          // the owner is done: reply to what is left, then end
	rsig  chan struct{} // cap 1: rlist or rstop changed

	// Owner only.
	slots []*qreq // requests submitted, by slot; nil when free
	avail []int   // free slots
	live  int
	batch []*block.Req
	out   []*block.Req
	done  []*qreq // reaped, for the replier
}

// openQueue returns the connection's queued path, or nil when the
// device has no queue of its own (its requests then all run on workers,
// as a block.GoQueue would run them, with panics recovered).
func (c *conn) openQueue() *qpath {
	qr, ok := c.exp.Dev.(block.Queuer)
	if !ok {
		return nil
	}
	depth := c.srv.maxInFlight()
	q, err := qr.NewQueue(depth)
	if err != nil {
		if !errors.Is(err, block.ErrNotSupported) {
			c.srv.logf("nbd: %s: no device queue, requests run on goroutines: %v", c.raw.RemoteAddr(), err)
		}
		return nil
	}
	p := &qpath{c: c, q: q,
		in:    make(chan *qreq, depth),
		free:  make(chan *qreq, depth),
		slots: make([]*qreq, depth),
		avail: make([]int, depth),
		out:   make([]*block.Req, depth),
		rsig:  make(chan struct{}, 1),
	}
	for i := range p.avail {
		p.avail[i] = depth - 1 - i
	}
	c.wg.Add(2) // the owner (it closes the queue before the device may close) and the replier
	go p.run()
	go p.replier()
	return p
}

// take queues r if the queue serves it, and reports whether it did; the
// reader calls it with the request checked, its budget n held and a
// WRITE's payload read. Otherwise the caller runs r on a worker.
func (p *qpath) take(r *request, payload []byte, n int64) bool {
	c := p.c
	var buf []byte
	switch r.typ {
	case cmdRead:
		if r.len == 0 {
			return false
		}
		if c.structured && c.status != nil && r.flags&cmdFlagDF == 0 && !c.allData(int64(r.off), int64(r.off)+int64(r.len)) {
			return false
		}
		buf = getBuf(int(r.len))
	case cmdWrite:
		if r.len == 0 || r.flags&cmdFlagFUA != 0 || (c.exp.DetectZeroes != DetectOff && allZero(payload)) {
			return false
		}
		buf = payload
	default:
		return false
	}
	var qr *qreq
	select {
	case qr = <-p.free:
	default:
		qr = new(qreq)
	}
	*qr = qreq{r: *r, n: n, buf: buf}
	qr.req = block.Req{Op: block.OpRead, Off: int64(r.off), Buf: buf}
	if r.typ == cmdWrite {
		qr.req.Op = block.OpWrite
	}
	c.wg.Add(1)
	p.in <- qr
	p.pending.Add(1)
	// The owner sets waiting, then looks at pending: either it sees this
	// request or this sees it waiting (no lost wake-up).
	if p.waiting.Load() {
		p.q.Wake()
	}
	return true
}

// allData reports whether [off, end) is data throughout, so that a
// sparse read of it is a single OFFSET_DATA chunk. A read with a hole is
// answered on a worker (conn.read), and so is one whose status fails or
// panics: the worker looks again and answers with the error (a panic
// there is recovered as any worker's). The reader pays for the lookup,
// usually of a cached table; one that must load a table delays the
// connection's next requests by that load, which the read then finds
// cached.
func (c *conn) allData(off, end int64) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	for pos := off; pos < end; {
		e, err := c.extent(pos, end)
		if err != nil || e.Zero {
			return false
		}
		pos += e.Len
	}
	return true
}

// close tells the owner that no more requests come; it finishes those
// in flight, replies to them and closes the queue (c.wg counts it).
func (p *qpath) close() { close(p.in) }

// run is the owner: it takes requests from the reader, submits them,
// waits for completions and replies, until in is closed and nothing is
// in flight; then it closes the queue.
func (p *qpath) run() {
	c := p.c
	defer c.wg.Done()
	defer p.stopReplier()
	defer func() {
		if x := recover(); x != nil {
			p.abandon(x)
		}
	}()
	open := true
	for open || p.live > 0 {
		if p.live == 0 {
			qr, ok := <-p.in
			if !ok {
				break
			}
			p.pending.Add(-1)
			p.add(qr)
		}
	drain:
		for open {
			select {
			case qr, ok := <-p.in:
				if !ok {
					open = false
					break drain
				}
				p.pending.Add(-1)
				p.add(qr)
			default:
				break drain
			}
		}
		p.submit()
		if p.live == 0 {
			continue
		}
		atLeast := 1
		p.waiting.Store(true)
		if p.pending.Load() > 0 {
			atLeast = 0 // more to submit: only take what is done
		}
		n, err := p.q.Wait(p.out, atLeast)
		p.waiting.Store(false)
		p.handOff(p.out[:n])
		clear(p.out[:n])
		if err != nil {
			p.fail(err)
			return
		}
	}
	if err := p.q.Close(); err != nil {
		c.srv.logf("nbd: %s: closing the device queue: %v", c.raw.RemoteAddr(), err)
	}
}

// add puts qr in a slot and in the batch to submit.
func (p *qpath) add(qr *qreq) {
	k := len(p.avail) - 1
	qr.slot = p.avail[k]
	p.avail = p.avail[:k]
	p.slots[qr.slot] = qr
	qr.req.User = uint64(qr.slot)
	p.live++
	p.batch = append(p.batch, &qr.req)
}

// submit starts the batch. The budget keeps the queue from filling
// (ErrQueueFull), and only the owner closes it, so a refusal fails the
// batch's requests without starting them.
func (p *qpath) submit() {
	if len(p.batch) == 0 {
		return
	}
	if err := p.q.Submit(p.batch...); err != nil {
		for _, req := range p.batch {
			req.Err = fmt.Errorf("nbd: device queue: %w", err)
		}
		p.handOff(p.batch)
	}
	clear(p.batch)
	p.batch = p.batch[:0]
}

// handOff frees the slots of the reaped requests done and hands them
// to the replier.
func (p *qpath) handOff(done []*block.Req) {
	if len(done) == 0 {
		return
	}
	for _, req := range done {
		qr := p.slots[req.User]
		p.slots[qr.slot] = nil
		p.avail = append(p.avail, qr.slot)
		p.live--
		p.done = append(p.done, qr)
	}
	p.rmu.Lock()
	p.rlist = append(p.rlist, p.done...)
	p.rmu.Unlock()
	clear(p.done)
	p.done = p.done[:0]
	kick(p.rsig)
}

// stopReplier tells the replier that nothing more comes: it replies to
// what it has, then ends.
func (p *qpath) stopReplier() {
	p.rmu.Lock()
	p.rstop = true
	p.rmu.Unlock()
	kick(p.rsig)
}

// kick wakes the goroutine waiting on the cap-1 channel ch, if any.
func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// replier writes the replies of what the owner hands it, a batch at a
// time, until the owner stops it.
func (p *qpath) replier() {
	defer p.c.wg.Done()
	var hdr []byte
	var list []*qreq
	for {
		p.rmu.Lock()
		list, p.rlist = p.rlist, list[:0]
		stop := p.rstop
		p.rmu.Unlock()
		if len(list) == 0 {
			if stop {
				return
			}
			<-p.rsig
			continue
		}
		hdr = p.write(list, hdr)
		p.release(list)
		clear(list)
	}
}

// write sends the replies of done, in one write under the connection's
// lock, flushed once; hdr is scratch space, returned for reuse. A panic
// here (a bug) is logged and closes the connection; the requests are
// still released.
func (p *qpath) write(done []*qreq, hdr []byte) []byte {
	c := p.c
	c.writers.Add(1)
	c.wmu.Lock()
	defer func() {
		if x := recover(); x != nil {
			c.srv.logf("nbd: %s: replying: internal error: %v\n%s", c.raw.RemoteAddr(), x, debug.Stack())
			c.werr = fmt.Errorf("nbd: internal error: %v", x)
			c.raw.Close()
		}
		c.wmu.Unlock()
	}()
	c.boundWrite()
	for _, qr := range done {
		if c.werr != nil {
			break
		}
		r, err := &qr.r, qr.req.Err
		switch {
		case err != nil:
			code := errno(err)
			if pe, ok := errors.AsType[*block.PanicError](err); ok {
				c.srv.logf("nbd: %s: %s [%d, +%d): internal error: %v\n%s", c.raw.RemoteAddr(), cmdName(r.typ), r.off, r.len, pe.Value, pe.Stack)
			}
			c.srv.debugf("nbd: %s: %s [%d, +%d): error %d: %v", c.raw.RemoteAddr(), cmdName(r.typ), r.off, r.len, code, err)
			_, c.werr = c.w.Write(simpleOrChunkErr(c, r, code, err.Error()))
		case r.typ == cmdWrite:
			hdr = appendSimple(hdr[:0], r.cookie, 0)
			_, c.werr = c.w.Write(hdr)
		default:
			if c.structured {
				hdr = appendChunk(hdr[:0], replyFlagDone, replyOffsetData, r.cookie, 8+len(qr.buf))
				hdr = appendU64(hdr, r.off)
			} else {
				hdr = appendSimple(hdr[:0], r.cookie, 0)
			}
			if _, c.werr = c.w.Write(hdr); c.werr == nil {
				_, c.werr = c.w.Write(qr.buf)
			}
		}
	}
	// The budget goes back before the flush: a client that sends its
	// next request as soon as it has a reply must not find the reader
	// still waiting for the slot that reply held.
	var bytes int64
	for _, qr := range done {
		bytes += qr.n
	}
	c.budget.releaseN(len(done), bytes)
	for _, qr := range done {
		qr.n = 0
	}
	c.writers.Add(-1)
	if c.werr == nil {
		c.werr = c.w.Flush()
		c.unflushed = 0
	}
	if c.werr != nil {
		c.raw.Close() // the client is gone: stop the reader too
	}
	return hdr
}

// release frees the replied requests done: their buffers, their budget
// if write did not give it back, and the qreqs for the reader to reuse.
func (p *qpath) release(done []*qreq) {
	for _, qr := range done {
		putBuf(qr.buf)
		if qr.n > 0 {
			p.c.budget.release(qr.n)
		}
		*qr = qreq{}
		select {
		case p.free <- qr:
		default:
		}
		p.c.wg.Done()
	}
}

// fail ends the queued path after the queue itself failed (a Wait error:
// the ring is unusable). The connection closes; the requests still in
// flight are waited for (they hold buffers) and dropped, and so is
// whatever the reader still sends.
func (p *qpath) fail(err error) {
	c := p.c
	c.srv.logf("nbd: %s: device queue: %v", c.raw.RemoteAddr(), err)
	c.raw.Close()
	p.drop(p.closeQueue())
	p.sink()
}

// abandon ends the queued path after a panic in it (the device queue's
// Submit or Wait, or the owner's own code): it is logged and the
// connection closes. The requests in flight still hold what the device
// gives them (a qcow2 image's data gate, which its discards and Close
// wait for), so the queue is drained and closed if it still can be.
func (p *qpath) abandon(x any) {
	c := p.c
	c.srv.logf("nbd: %s: device queue: internal error: %v\n%s", c.raw.RemoteAddr(), x, debug.Stack())
	c.raw.Close()
	p.drop(p.closeQueue())
	p.sink()
}

// drainLimit bounds how long the end of a failed or abandoned queued
// path waits for the queue's requests before the connection ends: a
// request a panic left counted in flight never completes, and must not
// keep the owner, and with it Server.Shutdown, forever.
var drainLimit = 5 * time.Second

// closeQueue drains the queue, dropping the completions, and closes it;
// it reports whether it did. Requests still in flight after drainLimit
// may only be slow: the queue then goes to a goroutine of its own
// (finishQueue) that goes on reaping them, so that their hold on the
// device (a qcow2 image's data gate, which its discards wait for) ends
// when they complete, and closes the queue after the last; Shutdown
// waits for it until its context ends. Until then their buffers stay
// theirs and the device may refuse to close (qcow2.ErrQueueOpen). A
// panic while draining leaves the queue as it is.
func (p *qpath) closeQueue() (ok bool) {
	c := p.c
	defer func() {
		if x := recover(); x != nil {
			c.srv.logf("nbd: %s: device queue: draining: internal error: %v", c.raw.RemoteAddr(), x)
			ok = false
		}
	}()
	if n := drainFor(p.q, drainLimit); n > 0 {
		c.srv.logf("nbd: %s: device queue: %d requests still in flight after %v; reaping them in the background", c.raw.RemoteAddr(), n, drainLimit)
		c.srv.draining.Add(1) // before the connection ends, so before Shutdown waits
		go func() {
			defer c.srv.draining.Done()
			finishQueue(p.q, func(f string, a ...any) { c.srv.logf("nbd: %s: "+f, append([]any{c.raw.RemoteAddr()}, a...)...) })
		}()
		return false
	}
	if err := p.q.Close(); err != nil {
		c.srv.logf("nbd: %s: closing the device queue: %v", c.raw.RemoteAddr(), err)
	}
	return true
}

// finishQueue becomes the owner of q (block A1) after its connection
// ended: it reaps q's requests as they complete, however long that
// takes, and closes q after the last. One that never completes keeps it
// waiting, and q open, for good.
func finishQueue(q block.Queue, logf func(string, ...any)) {
	defer func() {
		if x := recover(); x != nil {
			logf("device queue: draining: internal error: %v", x)
		}
	}()
	err := block.Drain(q)
	if n := q.InFlight(); n > 0 {
		logf("device queue: %d requests lost: %v", n, err)
		return
	}
	if err := q.Close(); err != nil {
		logf("closing the device queue: %v", err)
	}
}

// drainFor waits on q until nothing is in flight or d has passed,
// dropping the completions and going on past Wait errors, and returns
// how many requests are still in flight. A timer's Wake bounds the
// last Wait.
func drainFor(q block.Queue, d time.Duration) int {
	deadline := time.Now().Add(d)
	var out []*block.Req
	for q.InFlight() > 0 {
		left := time.Until(deadline)
		if left <= 0 {
			break
		}
		if len(out) < q.InFlight() {
			out = make([]*block.Req, q.InFlight())
		}
		t := time.AfterFunc(left, q.Wake)
		_, err := q.Wait(out, 1)
		t.Stop()
		if err != nil {
			time.Sleep(time.Millisecond)
		}
	}
	return q.InFlight()
}

// drop forgets the requests in slots without replies, giving their
// budget back (and their buffers, if reuse).
func (p *qpath) drop(reuse bool) {
	for i, qr := range p.slots {
		if qr == nil {
			continue
		}
		p.slots[i] = nil
		if reuse {
			putBuf(qr.buf)
		}
		p.c.budget.release(qr.n)
		p.c.wg.Done()
	}
	clear(p.batch)
	p.batch = p.batch[:0]
	p.live = 0
}

// sink drops what the reader sends until it closes in.
func (p *qpath) sink() {
	for qr := range p.in {
		putBuf(qr.buf)
		p.c.budget.release(qr.n)
		p.c.wg.Done()
	}
}
