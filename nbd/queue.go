package nbd

import (
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/qring/qring/block"
)

// The queued path. On a device with an asynchronous queue of its own
// (block.Queuer: a qcow2 image, a uring.File on io_uring) a connection's
// READ and WRITE requests do not each run the synchronous path on a
// worker goroutine: they go to one block.Queue per connection, whose
// owner goroutine submits them in batches, reaps their completions in
// batches and writes their replies, one flush per batch, as qemu-nbd's
// one thread with its AIO context does. Nothing runs per request, so a
// request is handed from goroutine to goroutine once (reader to owner)
// instead of three or four times (reader to worker, ring leader to
// waiter, reply lock, budget), and the requests of a connection do not
// wait as runnable goroutines in the Go scheduler's run queues: with a
// goroutine per request in flight, one whose P's thread the kernel had
// preempted (a client on the same CPUs) waited there for milliseconds,
// which made qnbd's p99.9 on random 4 KiB reads at QD64 2.5-4x
// qemu-nbd's (ext4 over zram, 2 vCPUs).
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

	// Owner only.
	slots []*qreq // requests submitted, by slot; nil when free
	avail []int   // free slots
	live  int
	batch []*block.Req
	out   []*block.Req
	hdr   []byte // reply headers of one batch
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
	}
	for i := range p.avail {
		p.avail[i] = depth - 1 - i
	}
	c.wg.Add(1) // the owner: it closes the queue before the device may close
	go p.run()
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
		p.reply(p.out[:n])
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
		p.reply(p.batch)
	}
	clear(p.batch)
	p.batch = p.batch[:0]
}

// reply answers the completed requests in one write under the
// connection's lock, flushed once, then frees them.
func (p *qpath) reply(done []*block.Req) {
	if len(done) == 0 {
		return
	}
	p.write(done)
	for _, req := range done {
		qr := p.slots[req.User]
		p.slots[qr.slot] = nil
		p.avail = append(p.avail, qr.slot)
		p.live--
		putBuf(qr.buf)
		*qr = qreq{}
		select {
		case p.free <- qr:
		default:
		}
		p.c.wg.Done()
	}
}

// write sends the replies of done and flushes them.
func (p *qpath) write(done []*block.Req) {
	c := p.c
	c.writers.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	for _, req := range done {
		if c.werr != nil {
			break
		}
		qr := p.slots[req.User]
		r := &qr.r
		switch {
		case req.Err != nil:
			code := errno(req.Err)
			if pe, ok := errors.AsType[*block.PanicError](req.Err); ok {
				c.srv.logf("nbd: %s: %s [%d, +%d): internal error: %v\n%s", c.raw.RemoteAddr(), cmdName(r.typ), r.off, r.len, pe.Value, pe.Stack)
			}
			c.srv.debugf("nbd: %s: %s [%d, +%d): error %d: %v", c.raw.RemoteAddr(), cmdName(r.typ), r.off, r.len, code, req.Err)
			_, c.werr = c.w.Write(simpleOrChunkErr(c, r, code, req.Err.Error()))
		case r.typ == cmdWrite:
			p.hdr = appendSimple(p.hdr[:0], r.cookie, 0)
			_, c.werr = c.w.Write(p.hdr)
		default:
			if c.structured {
				p.hdr = appendChunk(p.hdr[:0], replyFlagDone, replyOffsetData, r.cookie, 8+len(qr.buf))
				p.hdr = appendU64(p.hdr, r.off)
			} else {
				p.hdr = appendSimple(p.hdr[:0], r.cookie, 0)
			}
			if _, c.werr = c.w.Write(p.hdr); c.werr == nil {
				_, c.werr = c.w.Write(qr.buf)
			}
		}
	}
	// The budget goes back before the flush: a client that sends its
	// next request as soon as it has a reply must not find the reader
	// still waiting for the slot that reply held.
	var bytes int64
	for _, req := range done {
		bytes += p.slots[req.User].n
	}
	c.budget.releaseN(len(done), bytes)
	c.writers.Add(-1)
	if c.werr == nil {
		c.werr = c.w.Flush()
		c.unflushed = 0
	}
	if c.werr != nil {
		c.raw.Close() // the client is gone: stop the reader too
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
	block.Drain(p.q) // its error is the one above, or one like it
	if n := p.q.InFlight(); n > 0 {
		// Requests the queue never gave back: their buffers stay
		// theirs, and the queue stays open.
		c.srv.logf("nbd: %s: device queue: %d requests lost", c.raw.RemoteAddr(), n)
		p.drop(false)
	} else {
		p.drop(true)
		if cerr := p.q.Close(); cerr != nil {
			c.srv.logf("nbd: %s: closing the device queue: %v", c.raw.RemoteAddr(), cerr)
		}
	}
	p.sink()
}

// abandon ends the queued path after a panic in it (the device queue's
// Submit or Wait, or the owner's own code): it is logged and the
// connection closes. The requests in flight still hold what the device
// gives them (a qcow2 image's data gate, which its discards and Close
// wait for), so the queue is drained and closed if it still can be; if
// that panics too, the queue and its requests' buffers are left as they
// are, and the device may refuse to close (qcow2.ErrQueueOpen).
func (p *qpath) abandon(x any) {
	c := p.c
	c.srv.logf("nbd: %s: device queue: internal error: %v\n%s", c.raw.RemoteAddr(), x, debug.Stack())
	c.raw.Close()
	closed := p.closeAfterPanic()
	p.drop(closed)
	p.sink()
}

// closeAfterPanic drains and closes the queue, and reports whether it
// did without a panic and with nothing left in flight.
func (p *qpath) closeAfterPanic() (ok bool) {
	defer func() {
		if x := recover(); x != nil {
			p.c.srv.logf("nbd: %s: device queue: closing after an internal error: %v", p.c.raw.RemoteAddr(), x)
			ok = false
		}
	}()
	if err := block.Drain(p.q); err != nil || p.q.InFlight() > 0 {
		p.c.srv.logf("nbd: %s: device queue: %d requests lost after an internal error: %v", p.c.raw.RemoteAddr(), p.q.InFlight(), err)
		return false
	}
	if err := p.q.Close(); err != nil {
		p.c.srv.logf("nbd: %s: closing the device queue: %v", p.c.raw.RemoteAddr(), err)
	}
	return true
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
