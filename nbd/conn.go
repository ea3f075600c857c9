package nbd

import (
	"bufio"
	"bytes"
	"container/list"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// conn is one client connection: negotiation, then the transmission
// phase (section "Transmission").
// dirtyCtx is a selected dirty bitmap context: its bit in Extent.Dirty
// (its index in Export.Bitmaps) and its source.
type dirtyCtx struct {
	bit uint
	src DirtySource
}

type conn struct {
	srv         *Server
	counted     bool          // holds a token of Server.sem
	negotiating *list.Element // in Server.negotiating; guarded by Server.mu
	evicted     bool          // closed for MaxHandshakes; guarded by Server.mu
	raw         net.Conn      // the socket: deadlines and Close
	nc          net.Conn      // raw, or the TLS connection over it
	r           *bufio.Reader
	w           *bufio.Writer

	// Negotiated state.
	noZeroes bool
	// plainNewstyle: the client did not set NBD_FLAG_C_FIXED_NEWSTYLE;
	// only NBD_OPT_EXPORT_NAME is taken from it.
	plainNewstyle bool
	structured    bool
	tls           bool
	meta          []uint32 // selected metadata contexts
	metaExport    string   // the export they were selected for
	exp           *Export
	size          int64
	status        StatusSource
	dirty         []dirtyCtx // the export's bitmaps whose contexts are selected

	// Transmission.
	wmu       sync.Mutex     // guards w and werr
	werr      error          // first write error: later replies are dropped
	unflushed int            // replies written to w since its last flush
	writers   atomic.Int32   // replies waiting for or holding wmu
	wg        sync.WaitGroup // requests in flight
	budget    *budget
	stopped   atomic.Bool // stop was called
}

// A connection negotiates with small buffers and gets the large ones of
// the transmission phase when it enters it (transmitting): until then it
// costs a few KiB, however many connect and sit idle (MaxHandshakes).
const (
	negotiateBuf = 1 << 10
	transmitBuf  = 64 << 10
)

func newConn(s *Server, nc net.Conn) *conn {
	return &conn{
		srv: s, raw: nc, nc: nc,
		r: bufio.NewReaderSize(nc, negotiateBuf),
		w: bufio.NewWriterSize(nc, negotiateBuf),
	}
}

// transmitting gives the connection its transmission-phase buffers and
// budget. The negotiation's replies are all flushed; what the client
// sent after its last option (requests it did not wait to send) stays
// first in line.
func (c *conn) transmitting() {
	var rd io.Reader = c.nc
	if n := c.r.Buffered(); n > 0 {
		ahead, _ := c.r.Peek(n)
		rd = io.MultiReader(bytes.NewReader(bytes.Clone(ahead)), c.nc)
	}
	c.r = bufio.NewReaderSize(rd, transmitBuf)
	c.w = bufio.NewWriterSize(c.nc, transmitBuf)
	c.budget = newBudget(c.srv.maxInFlight(), c.srv.maxInFlightBytes())
}

// stop interrupts the reader: the connection finishes the requests in
// flight, replies to them and closes (Server.Shutdown). A client that
// does not read the replies gets stopGrace: a reply write blocked longer
// fails and the connection closes, so it holds Shutdown no longer than
// that (as qemu-nbd, which shuts its clients' sockets down at once),
// rather than for the caller's whole context (qnbd: 30 s).
func (c *conn) stop() {
	c.stopped.Store(true)
	c.raw.SetReadDeadline(time.Now())
	c.raw.SetWriteDeadline(time.Now().Add(stopGrace)) // a write blocked now
}

// stopGrace is how long a reply write may block after stop.
var stopGrace = closeGrace

// boundWrite gives the reply about to be written, after stop, stopGrace
// from now (stop's deadline counts from stop: a request that outlasts it
// still gets its reply to a client that reads). Called with wmu held.
func (c *conn) boundWrite() {
	if c.stopped.Load() {
		c.raw.SetWriteDeadline(time.Now().Add(stopGrace))
	}
}

// serve runs the connection to its end. It never panics: a panic outside
// a request (those recover on their own) is logged and closes the
// connection after the requests in flight are done.
func (c *conn) serve() {
	defer c.raw.Close()
	defer func() {
		if p := recover(); p != nil {
			c.srv.logf("nbd: %s: internal error: %v\n%s", c.raw.RemoteAddr(), p, debug.Stack())
			c.wg.Wait()
		}
	}()
	// A client gets a bounded time to negotiate (qemu-nbd's
	// --handshake-limit), so idle or trickling clients cannot pin
	// connections.
	if l := c.srv.handshakeLimit(); l > 0 {
		c.raw.SetDeadline(time.Now().Add(l))
	}
	err := c.negotiate()
	if !c.srv.leaveHandshake(c) {
		return // closed for MaxHandshakes; Server logged it
	}
	if err != nil {
		if !quiet(err) {
			c.srv.logf("nbd: %s: negotiation: %v", c.raw.RemoteAddr(), err)
		}
		if errors.Is(err, errAbort) {
			c.closeTLS() // a clean end, as after NBD_CMD_DISC
		}
		return
	}
	c.raw.SetDeadline(time.Time{})
	c.transmitting()
	c.srv.mu.Lock()
	c.srv.served++
	c.srv.mu.Unlock()
	if c.stopped.Load() {
		c.raw.SetReadDeadline(time.Now()) // Shutdown came during the handshake
	}
	c.status = c.exp.status()
	c.dirty = c.dirty[:0]
	for _, id := range c.meta {
		if id >= metaDirtyBitmap {
			c.dirty = append(c.dirty, dirtyCtx{uint(id - metaDirtyBitmap), c.exp.Bitmaps[id-metaDirtyBitmap].Source})
		}
	}
	c.srv.debugf("nbd: %s: export %q, size %d, structured %v, contexts %v", c.raw.RemoteAddr(), c.exp.Name, c.size, c.structured, c.meta)
	err = c.transmit()
	c.wg.Wait()
	if err != nil && !quiet(err) {
		c.srv.logf("nbd: %s: %v", c.raw.RemoteAddr(), err)
	}
	c.wmu.Lock()
	if c.werr == nil {
		// The last replies, then over TLS the end of the session: the
		// spec (section "TLS support") has the server shut TLS down,
		// not just drop the socket, so the client sees a close_notify
		// alert (and can tell the end from a truncation) after
		// NBD_CMD_DISC. A client that does not read gets closeGrace.
		c.raw.SetWriteDeadline(time.Now().Add(closeGrace))
		if c.werr = c.w.Flush(); c.werr == nil {
			c.closeTLS()
		}
	}
	c.wmu.Unlock()
}

// closeTLS ends the TLS session, if there is one, with a close_notify
// alert (bounded by closeGrace), and closes the socket.
func (c *conn) closeTLS() {
	if c.tls {
		c.raw.SetWriteDeadline(time.Now().Add(closeGrace))
		c.nc.Close()
	}
}

// closeGrace bounds the writes that end a connection: the last buffered
// replies and the TLS close_notify.
const closeGrace = 5 * time.Second

// quiet reports errors that are a normal end of a connection: the client
// closed it, aborted, or the server is shutting down.
func quiet(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, errAbort) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || (errors.As(err, &ne) && ne.Timeout())
}

// transmit reads requests until the client disconnects (NBD_CMD_DISC:
// the requests in flight still complete and get their replies, section
// "Terminating the transmission phase") or the stream breaks. Each
// request runs within the budget, on the connection's device queue when
// it takes it (queue.go), else on one of MaxInFlight workers; the
// payload of a WRITE is read here, before the next header.
func (c *conn) transmit() error {
	// The workers take the requests in arrival order, so an old request
	// is not overtaken by newer ones in the scheduler's run queue, as
	// goroutines started per request can be.
	jobs := make(chan job, c.srv.maxInFlight())
	defer close(jobs)
	qp := c.openQueue()
	if qp != nil {
		defer qp.close()
	}
	// Workers start as requests need them (an idle connection holds
	// none: 64 goroutines each cost more than its buffers), up to
	// MaxInFlight: one more whenever the requests handed out and not
	// finished are as many as the workers, so none is free. A stale
	// count only overstates them (a worker counts its request finished
	// after it ran it): an extra worker at worst, never a request
	// queued behind a slow one while a worker could have been started.
	// (Counting idle workers had a window, between a worker's receive
	// and its count, where a request queued behind a busy worker: one
	// held request stalled the next; TestConcurrent.)
	var pending atomic.Int32
	started, most := 0, c.srv.maxInFlight()
	worker := func() {
		for j := range jobs {
			c.run(j.r, j.payload, j.n)
			pending.Add(-1)
		}
	}
	dispatch := func(j job) {
		if started < most && int(pending.Load()) >= started {
			started++
			go worker()
		}
		pending.Add(1)
		jobs <- j
	}
	var hdr [requestSize]byte
	for {
		if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
			return err
		}
		r, err := parseRequest(&hdr)
		if err != nil {
			return err
		}
		if r.typ == cmdDisc {
			return nil
		}
		cerr := c.check(&r)
		if cerr == nil && c.exp.WriteThrough && (r.typ == cmdWrite || r.typ == cmdWriteZeroes) {
			// Flushed before the reply, on a worker (the queue takes
			// no FUA write).
			r.flags |= cmdFlagFUA
		}
		// n is the memory the request holds until its reply is sent:
		// the payload of a READ or WRITE, the descriptors of a
		// BLOCK_STATUS.
		var n int64
		switch r.typ {
		case cmdRead, cmdWrite:
			n = int64(r.len)
		case cmdBlockStatus:
			n = c.statusCost(&r)
		}
		if r.typ == cmdWrite && r.len > MaxPayload {
			// The payload cannot be taken in and skipping up to 4 GiB is
			// not worth it: refuse, then close (the spec allows closing
			// when the server will not read a payload).
			if cerr == nil {
				cerr = einval("WRITE larger than the maximum payload")
			}
			c.replyErr(&r, cerr)
			return fmt.Errorf("a WRITE of %d bytes, more than the %d a request may carry: closing the connection", r.len, MaxPayload)
		}
		if cerr != nil && r.typ != cmdWrite {
			n = 0 // refused without a buffer
		}
		c.budget.acquire(n)
		var payload []byte
		if r.typ == cmdWrite {
			payload = getBuf(int(r.len))
			if _, err := io.ReadFull(c.r, payload); err != nil {
				putBuf(payload)
				c.budget.release(n)
				return fmt.Errorf("nbd: WRITE payload: %w", err)
			}
		}
		if cerr != nil {
			if payload != nil {
				putBuf(payload)
			}
			c.replyErr(&r, cerr)
			c.budget.release(n)
			continue
		}
		if qp != nil && qp.take(&r, payload, n) {
			continue
		}
		c.wg.Add(1)
		dispatch(job{r, payload, n})
	}
}

// job is a request handed to a worker, with its payload and the budget
// it holds.
type job struct {
	r       request
	payload []byte
	n       int64
}

// run executes one request and replies. A panic in the device is
// recovered here: it is logged and the request fails with EIO.
func (c *conn) run(r request, payload []byte, n int64) {
	replied := false
	defer func() {
		if p := recover(); p != nil {
			c.srv.logf("nbd: %s: %s [%d, +%d): internal error: %v\n%s", c.raw.RemoteAddr(), cmdName(r.typ), r.off, r.len, p, debug.Stack())
			if !replied {
				c.send(simpleOrChunkErr(c, &r, errIO, fmt.Sprint("internal error: ", p)))
			}
		}
		if payload != nil {
			putBuf(payload)
		}
		c.budget.release(n)
		c.wg.Done()
	}()
	var err error
	switch r.typ {
	case cmdRead:
		replied = c.read(&r)
		return
	case cmdBlockStatus:
		replied = c.blockStatus(&r)
		return
	case cmdWrite:
		err = c.write(&r, payload)
	case cmdWriteZeroes:
		err = c.writeZeroes(&r)
	case cmdTrim:
		err = c.trim(&r)
	case cmdFlush:
		err = c.exp.Dev.Flush()
	case cmdCache:
		// Section "Request types", NBD_CMD_CACHE: a hint. The engine
		// has its own caches; nothing to do but succeed.
	}
	if err == nil && r.flags&cmdFlagFUA != 0 && r.typ != cmdFlush {
		err = c.exp.Dev.Flush()
	}
	replied = true
	if err != nil {
		c.replyErr(&r, err)
		return
	}
	c.replyOK(&r)
}

// simpleOrChunkErr is the error reply for r: an error chunk with msg
// once structured replies are negotiated (READ and BLOCK_STATUS need one;
// for the others the spec allows a simple reply, but the chunk carries
// the message, as qemu-nbd's do), else a simple reply.
func simpleOrChunkErr(c *conn, r *request, code uint32, msg string) []byte {
	if c.structured {
		return errorChunk(r.cookie, code, msg)
	}
	return simpleHeader(r.cookie, code)
}
