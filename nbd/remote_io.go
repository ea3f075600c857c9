package nbd

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/qring/qring/block"
)

// The client's transmission phase (section "Transmission"): requests
// under Client.wmu, replies read by one goroutine (readLoop) and handed
// to the request they answer.

// call is one request waiting for its reply.
type call struct {
	typ  uint16
	off  int64
	n    uint32
	dst  [][]byte // READ: where the data goes
	got  []span   // READ: the ranges the chunks filled (structured)
	ext  []extent // BLOCK_STATUS: base:allocation's descriptors
	err  error    // the first error reply
	done chan struct{}
}

type span struct{ off, n int64 }

type extent struct {
	n     uint32
	flags uint32
}

// RemoteError is an error the server replied to a request (section
// "Error values"), as an errno. It matches block.ErrNotSupported for
// ENOTSUP and block.ErrReadOnly for EPERM.
type RemoteError struct {
	Errno syscall.Errno
	Msg   string // the server's message, from an error chunk
}

func (e *RemoteError) Error() string { return errnoText(e.Errno) }

func (e *RemoteError) Unwrap() error { return e.Errno }

func (e *RemoteError) Is(target error) bool {
	switch target {
	case block.ErrNotSupported:
		return e.Errno == syscall.ENOTSUP
	case block.ErrReadOnly:
		return e.Errno == syscall.EPERM
	}
	return false
}

// remoteErrno maps an NBD error value to the errno QEMU's client gives
// it (nbd_errno_to_system_errno): an unknown one is EINVAL.
func remoteErrno(v uint32) syscall.Errno {
	switch v {
	case errPerm:
		return syscall.EPERM
	case errIO:
		return syscall.EIO
	case errNoMem:
		return syscall.ENOMEM
	case errNoSpc:
		return syscall.ENOSPC
	case errOverflow:
		return syscall.EOVERFLOW
	case errNotSup:
		return syscall.ENOTSUP
	case errShutdown:
		return syscall.ESHUTDOWN
	}
	return syscall.EINVAL
}

// maxStatusChunk bounds a block status chunk: a server answering one
// request with more descriptors than that is not trusted with memory.
const maxStatusChunk = 1 << 20

// fail ends the connection: the reader then completes every request
// waiting with the first reason given. Only the reader completes
// requests, so no request returns while its buffers may still be filled.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	c.mu.Unlock()
	c.nc.Close()
}

// readLoop reads replies until the connection ends, then fails the
// requests still waiting.
func (c *Client) readLoop() {
	defer close(c.readDone)
	var err error
	for err == nil {
		err = c.readReply()
	}
	c.nc.Close()
	c.mu.Lock()
	switch {
	case c.broken != nil:
	case c.closed && errors.Is(err, os.ErrDeadlineExceeded):
		c.broken = errCloseTimeout
	case c.closed:
		c.broken = os.ErrClosed
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		c.broken = errors.New("nbd: the server closed the connection")
	default:
		c.broken = err
	}
	err = c.broken
	calls := c.pending
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
	for _, k := range calls {
		if k.err == nil {
			k.err = err
		}
		close(k.done)
	}
}

func (c *Client) take(cookie uint64, remove bool) *call {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.pending[cookie]
	if remove {
		delete(c.pending, cookie)
	}
	return k
}

func (c *Client) readReply() error {
	var h [20]byte
	if _, err := io.ReadFull(c.r, h[:4]); err != nil {
		return err
	}
	switch binary.BigEndian.Uint32(h[:4]) {
	case magicSimple:
		if _, err := io.ReadFull(c.r, h[4:16]); err != nil {
			return err
		}
		cookie := binary.BigEndian.Uint64(h[8:16])
		k := c.take(cookie, false) // removed once read whole: a reply cut short fails it
		if k == nil {
			return &ProtocolError{fmt.Sprintf("reply to unknown cookie %d", cookie)}
		}
		if e := binary.BigEndian.Uint32(h[4:8]); e != 0 {
			k.err = &RemoteError{Errno: remoteErrno(e)}
		} else if k.typ == cmdRead {
			if c.structured {
				return &ProtocolError{"simple reply with data to a READ after structured replies"}
			}
			if err := readVec(c.r, k.dst, 0, int64(k.n)); err != nil {
				return err
			}
		} else if k.typ == cmdBlockStatus {
			return &ProtocolError{"simple reply to a successful BLOCK_STATUS"}
		}
		c.take(cookie, true)
		close(k.done)
		return nil
	case magicStruct:
		if !c.structured {
			return &ProtocolError{"structured reply not negotiated"}
		}
		if _, err := io.ReadFull(c.r, h[4:20]); err != nil {
			return err
		}
		flags := binary.BigEndian.Uint16(h[4:6])
		typ := binary.BigEndian.Uint16(h[6:8])
		cookie := binary.BigEndian.Uint64(h[8:16])
		n := binary.BigEndian.Uint32(h[16:20])
		k := c.take(cookie, false)
		if k == nil {
			return &ProtocolError{fmt.Sprintf("reply to unknown cookie %d", cookie)}
		}
		if err := c.chunk(k, typ, n); err != nil {
			return err
		}
		if flags&replyFlagDone == 0 {
			return nil
		}
		if k.err == nil && k.typ == cmdRead {
			// Still pending: the protocol error ends the connection,
			// and the reader's drain fails the request.
			if err := k.covered(); err != nil {
				return err
			}
		}
		c.take(cookie, true)
		close(k.done)
		return nil
	}
	return &ProtocolError{"bad reply magic"}
}

// chunk reads one structured reply chunk of type typ and length n for k
// (section "Structured reply types").
func (c *Client) chunk(k *call, typ uint16, n uint32) error {
	switch typ {
	case replyNone:
		if n != 0 {
			return &ProtocolError{"NBD_REPLY_TYPE_NONE with a payload"}
		}
		return nil
	case replyOffsetData, replyOffsetHole:
		if k.typ != cmdRead {
			return &ProtocolError{"data chunk in a reply to a request other than READ"}
		}
		var b [12]byte
		if n < 8 || typ == replyOffsetHole && n != 12 {
			return &ProtocolError{"read chunk of the wrong length"}
		}
		hl := 8
		if typ == replyOffsetHole {
			hl = 12
		}
		if _, err := io.ReadFull(c.r, b[:hl]); err != nil {
			return err
		}
		off := binary.BigEndian.Uint64(b[:8])
		ln := int64(n) - 8
		if typ == replyOffsetHole {
			ln = int64(binary.BigEndian.Uint32(b[8:12]))
		}
		if ln == 0 || off < uint64(k.off) || off-uint64(k.off) > uint64(k.n) || uint64(ln) > uint64(k.n)-(off-uint64(k.off)) {
			return &ProtocolError{fmt.Sprintf("read chunk [%d, +%d) outside the request [%d, +%d)", off, ln, k.off, k.n)}
		}
		at := int64(off) - k.off
		k.got = append(k.got, span{at, ln})
		if len(k.got) > int(k.n) {
			return &ProtocolError{"more read chunks than bytes"}
		}
		if typ == replyOffsetHole {
			zeroVec(k.dst, at, ln)
			return nil
		}
		return readVec(c.r, k.dst, at, ln)
	case replyBlockStatus:
		if k.typ != cmdBlockStatus {
			return &ProtocolError{"block status chunk in a reply to another request"}
		}
		if n < 12 || (n-4)%8 != 0 || n > maxStatusChunk {
			return &ProtocolError{"block status chunk of the wrong length"}
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c.r, b); err != nil {
			return err
		}
		if id := binary.BigEndian.Uint32(b[:4]); id != c.metaID {
			return &ProtocolError{fmt.Sprintf("block status for context %d not asked for", id)}
		}
		if k.ext != nil {
			return &ProtocolError{"two block status chunks for one context"}
		}
		for d := b[4:]; len(d) >= 8; d = d[8:] {
			k.ext = append(k.ext, extent{binary.BigEndian.Uint32(d[:4]), binary.BigEndian.Uint32(d[4:8])})
		}
		return nil
	}
	if typ&(1<<15) == 0 {
		return &ProtocolError{fmt.Sprintf("unknown reply chunk type %d", typ)}
	}
	// An error chunk: error, message length, message (and an offset
	// for NBD_REPLY_TYPE_ERROR_OFFSET).
	if n < 6 || n > maxOptReply+14 {
		return &ProtocolError{"error chunk of the wrong length"}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c.r, b); err != nil {
		return err
	}
	e := binary.BigEndian.Uint32(b[:4])
	ml := uint32(binary.BigEndian.Uint16(b[4:6]))
	if e == 0 {
		return &ProtocolError{"error chunk without an error"}
	}
	want := 6 + ml
	if typ == replyErrorOffset {
		want += 8
	}
	if want > n || typ == replyErrorOffset && want != n {
		return &ProtocolError{"error chunk message of the wrong length"}
	}
	if typ == replyErrorOffset {
		// The offset names where the error happened, which MUST lie
		// within the request ("NBD_REPLY_TYPE_ERROR_OFFSET"): a FLUSH
		// has no byte it could name.
		off := binary.BigEndian.Uint64(b[6+ml:])
		if off < uint64(k.off) || off-uint64(k.off) >= uint64(k.n) {
			return &ProtocolError{fmt.Sprintf("error chunk offset %d outside the %s request [%d, +%d)", off, cmdName(k.typ), k.off, k.n)}
		}
	}
	if k.err == nil {
		k.err = &RemoteError{Errno: remoteErrno(e), Msg: string(b[6 : 6+ml])}
	}
	return nil
}

// covered checks that a READ's chunks filled its range exactly once.
func (k *call) covered() error {
	slices.SortFunc(k.got, func(a, b span) int {
		switch {
		case a.off < b.off:
			return -1
		case a.off > b.off:
			return 1
		}
		return 0
	})
	var at int64
	for _, s := range k.got {
		if s.off != at {
			return &ProtocolError{fmt.Sprintf("READ reply chunks leave [%d, +%d) unfilled or fill it twice", k.off+at, k.n)}
		}
		at += s.n
	}
	if at != int64(k.n) {
		return &ProtocolError{fmt.Sprintf("READ reply chunks end at %d of %d bytes", at, k.n)}
	}
	return nil
}

// readVec reads n bytes into the bytes of bufs from offset at.
func readVec(r io.Reader, bufs [][]byte, at, n int64) error {
	for _, b := range bufs {
		if n == 0 {
			return nil
		}
		if at >= int64(len(b)) {
			at -= int64(len(b))
			continue
		}
		m := min(int64(len(b))-at, n)
		if _, err := io.ReadFull(r, b[at:at+m]); err != nil {
			return err
		}
		at, n = 0, n-m
	}
	return nil
}

// zeroVec zeroes n bytes of bufs from offset at.
func zeroVec(bufs [][]byte, at, n int64) {
	for _, b := range bufs {
		if n == 0 {
			return
		}
		if at >= int64(len(b)) {
			at -= int64(len(b))
			continue
		}
		m := min(int64(len(b))-at, n)
		clear(b[at : at+m])
		at, n = 0, n-m
	}
}

// subVec is the n bytes of bufs from offset at, as slices of them.
func subVec(bufs [][]byte, at, n int64) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n == 0 {
			break
		}
		if at >= int64(len(b)) {
			at -= int64(len(b))
			continue
		}
		m := min(int64(len(b))-at, n)
		out = append(out, b[at:at+m])
		at, n = 0, n-m
	}
	return out
}

// do sends one request and waits for its reply. payload is a WRITE's
// data, dst a READ's buffers.
func (c *Client) do(typ, flags uint16, off int64, n uint32, payload, dst [][]byte) (*call, error) {
	return c.send(false, typ, flags, off, n, payload, dst)
}

// send is do; closing lets Close send its flush after it has marked the
// client closed.
func (c *Client) send(closing bool, typ, flags uint16, off int64, n uint32, payload, dst [][]byte) (*call, error) {
	k := &call{typ: typ, off: off, n: n, dst: dst, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed && !closing {
		c.mu.Unlock()
		return nil, os.ErrClosed
	}
	if c.broken != nil {
		err := c.broken
		c.mu.Unlock()
		return nil, err
	}
	c.cookie++
	cookie := c.cookie
	c.pending[cookie] = k
	c.mu.Unlock()

	var h [28]byte
	binary.BigEndian.PutUint32(h[:4], magicRequest)
	binary.BigEndian.PutUint16(h[4:6], flags)
	binary.BigEndian.PutUint16(h[6:8], typ)
	binary.BigEndian.PutUint64(h[8:16], cookie)
	binary.BigEndian.PutUint64(h[16:24], uint64(off))
	binary.BigEndian.PutUint32(h[24:28], n)
	bufs := net.Buffers{h[:]}
	for _, p := range payload {
		bufs = append(bufs, p)
	}
	c.wmu.Lock()
	_, err := bufs.WriteTo(c.nc)
	c.wmu.Unlock()
	if err != nil {
		// Half a request may be on the wire: the connection is done.
		c.fail(fmt.Errorf("nbd: sending a request: %w", err))
	}
	<-k.done
	if k.err != nil {
		return k, k.err
	}
	return k, nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// opErr wraps a failed request in block.OpError.
func opErr(op string, off, n int64, err error) error {
	if err == nil {
		return nil
	}
	return &block.OpError{Op: op, Off: off, Len: n, Err: err}
}

// Readv reads bufs from off; bytes past the export's end read as zeros
// (B2). Under a server's minimum block size the partial blocks at the
// edges are read whole and copied (readAligned).
func (c *Client) Readv(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if c.isClosed() {
		return os.ErrClosed
	}
	in := max(0, min(n, c.size-off))
	zeroVec(bufs, in, n-in)
	return c.readAligned(off, in, bufs)
}

// readChunks reads [off, off+n) into bufs, aligned, in requests of at
// most the server's maximum payload.
func (c *Client) readChunks(off, n int64, bufs [][]byte) error {
	for at := int64(0); at < n; {
		m := min(n-at, int64(c.maxPayload))
		if _, err := c.do(cmdRead, 0, off+at, uint32(m), nil, subVec(bufs, at, m)); err != nil {
			return opErr("nbd read", off+at, m, err)
		}
		at += m
	}
	return nil
}

// errPastEnd is a write past the export's end: an export never grows.
var errPastEnd = &RemoteError{Errno: syscall.ENOSPC}

func (c *Client) writable(off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	switch {
	case c.isClosed():
		return os.ErrClosed
	case c.readOnly:
		return block.ErrReadOnly
	case off+n > c.size:
		return opErr("nbd write", off, n, errPastEnd)
	}
	return nil
}

// Writev writes bufs at off; the export cannot grow, so a write past its
// end fails with ENOSPC. Under a server's minimum block size a partial
// block is read, patched and written whole (writeAligned).
func (c *Client) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := c.writable(off, n); err != nil {
		return err
	}
	return c.writeAligned(off, n, func(at int64, blk []byte) { copyFromVec(blk, bufs, at) },
		func(p, at, m int64) error { return c.writeChunks(p, m, subVec(bufs, at, m)) })
}

// writeChunks writes bufs at off, aligned, in requests of at most the
// server's maximum payload.
func (c *Client) writeChunks(off, n int64, bufs [][]byte) error {
	c.dirty.Store(true)
	for at := int64(0); at < n; {
		m := min(n-at, int64(c.maxPayload))
		if _, err := c.do(cmdWrite, 0, off+at, uint32(m), subVec(bufs, at, m), nil); err != nil {
			return opErr("nbd write", off+at, m, err)
		}
		at += m
	}
	return nil
}

// maxZero is the longest WRITE_ZEROES, TRIM or BLOCK_STATUS sent at
// once: a multiple of every minimum block size.
const maxZero = 1 << 30

// WriteZeroes zeroes [off, off+n): NBD_CMD_WRITE_ZEROES, with NO_HOLE
// unless flags have MayUnmap and FAST_ZERO for Allocate (B3: the server
// refuses it with ENOTSUP when it cannot zero fast); without the
// command, zero buffers are written, unless Allocate forbids it. Under a
// server's minimum block size, partial blocks at the edges are written
// as data (read-modify-write), and Allocate refuses a range that has
// them (B3, Caps.Align).
func (c *Client) WriteZeroes(off, n int64, flags block.Flags) error {
	if flags&^(block.Allocate|block.MayUnmap) != 0 {
		return block.ErrNotSupported
	}
	if err := c.writable(off, n); err != nil {
		return err
	}
	if c.flags&FlagSendWriteZeroes == 0 {
		if flags&block.Allocate != 0 {
			return block.ErrNotSupported
		}
		return c.writeZeroBuffers(off, n)
	}
	var nf uint16
	if flags&block.MayUnmap == 0 {
		nf |= cmdFlagNoHole
	}
	if flags&block.Allocate != 0 {
		if c.flags&FlagSendFastZero == 0 || !c.aligned(off, n) {
			return block.ErrNotSupported
		}
		nf |= cmdFlagFastZero
	}
	return c.writeAligned(off, n, func(_ int64, blk []byte) { clear(blk) },
		func(p, _, m int64) error { return c.zeroChunks(p, m, nf) })
}

// zeroChunks is WRITE_ZEROES over [off, off+n), aligned.
func (c *Client) zeroChunks(off, n int64, nf uint16) error {
	c.dirty.Store(true)
	for at := int64(0); at < n; {
		m := min(n-at, maxZero)
		if _, err := c.do(cmdWriteZeroes, nf, off+at, uint32(m), nil, nil); err != nil {
			return opErr("nbd write zeroes", off+at, m, err)
		}
		at += m
	}
	return nil
}

func (c *Client) writeZeroBuffers(off, n int64) error {
	z := make([]byte, min(n, 1<<20))
	for at := int64(0); at < n; {
		m := min(n-at, int64(len(z)))
		if err := c.Writev(off+at, [][]byte{z[:m]}); err != nil {
			return err
		}
		at += m
	}
	return nil
}

// Discard is NBD_CMD_TRIM; a server without it is not asked (a discard
// promises nothing), and under a server's minimum block size only the
// whole blocks of the range are, as QEMU's block layer trims them.
func (c *Client) Discard(off, n int64) error {
	if err := c.writable(off, n); err != nil {
		return err
	}
	if c.flags&FlagSendTrim == 0 {
		return nil
	}
	a := c.align()
	start, end := alignUp(off, a), alignDown(off+n, a)
	if start >= end {
		return nil
	}
	if a > 1 {
		c.rmw.RLock()
		defer c.rmw.RUnlock()
	}
	c.dirty.Store(true)
	for at := start; at < end; {
		m := min(end-at, maxZero)
		if _, err := c.do(cmdTrim, 0, at, uint32(m), nil, nil); err != nil {
			return opErr("nbd trim", at, m, err)
		}
		at += m
	}
	return nil
}

// Flush is NBD_CMD_FLUSH (nothing when the server does not ask for
// flushes: its writes are durable when acknowledged). After a failed
// flush every later one fails (B6).
func (c *Client) Flush() error {
	if c.isClosed() {
		return os.ErrClosed
	}
	return c.flush(false)
}

// flush is Flush; closing is Close's.
func (c *Client) flush(closing bool) error {
	c.mu.Lock()
	failed := c.flushFailed
	c.mu.Unlock()
	switch {
	case failed:
		return block.ErrFlushFailed
	case c.flags&FlagSendFlush == 0 || c.readOnly:
		return nil
	}
	// Cleared before the flush is sent: a write sent meanwhile may not
	// be covered, and marks the client again.
	c.dirty.Store(false)
	if _, err := c.send(closing, cmdFlush, 0, 0, 0, nil, nil); err != nil {
		c.mu.Lock()
		c.flushFailed = true
		c.mu.Unlock()
		return opErr("nbd flush", 0, 0, err)
	}
	return nil
}

// Size is the export's size.
func (c *Client) Size() (int64, error) {
	if c.isClosed() {
		return 0, os.ErrClosed
	}
	return c.size, nil
}

// Truncate refuses any other size than the export's (ErrResize).
func (c *Client) Truncate(size int64) error {
	cur, err := c.Size()
	switch {
	case err != nil:
		return err
	case size != cur:
		return ErrResize
	}
	return nil
}

// resizeError is a refused Truncate: ErrNotSupported in QEMU's words.
type resizeError string

func (e resizeError) Error() string        { return string(e) }
func (e resizeError) Is(target error) bool { return target == block.ErrNotSupported }

// ErrResize is Truncate's refusal of another size than the export's, in
// the words of QEMU's exact truncate (nbd_co_truncate; its inexact one,
// which only a growth fails, says "Cannot grow NBD nodes").
const ErrResize = resizeError("Cannot resize NBD nodes")

// Caps: an export never grows (Fixed); zeroing is efficient or refused
// only when the server takes FAST_ZERO.
func (c *Client) Caps() block.Caps {
	caps := block.Caps{Align: 1, MemAlign: 1, Fixed: true, ZeroFlags: block.MayUnmap}
	if c.minBlock > 1 {
		caps.Align = int64(c.minBlock)
	}
	if c.flags&(FlagSendWriteZeroes|FlagSendFastZero) == FlagSendWriteZeroes|FlagSendFastZero {
		caps.ZeroFlags |= block.Allocate
	}
	if c.flags&FlagRotational != 0 {
		caps.Media = block.MediaHDD
	}
	return caps
}

// DataRun answers from the server's base:allocation context: a hole
// (false) only where the server says it reads as zeros, NBD_STATE_HOLE
// with NBD_STATE_ZERO (the spec promises nothing of a hole alone, whose
// bytes a caller that takes a hole for zeros would lose); without the
// context every byte is data.
func (c *Client) DataRun(off, n int64) (bool, int64, error) {
	data, zero, run, err := c.ZeroRun(off, n)
	return data || !zero, run, err
}

// ZeroRun implements block.ZeroMapper: data unless NBD_STATE_HOLE, zero
// only with NBD_STATE_ZERO, as QEMU's nbd driver turns them into
// BDRV_BLOCK_DATA and BDRV_BLOCK_ZERO. Past the end: a zero hole. Under
// a server's minimum block size the query covers the blocks around the
// range, and an extent of unaligned length is taken as QEMU's client
// takes it (nbd_parse_blockstatus_payload): rounded down to the
// alignment, or, when shorter than one block, a whole block of data.
func (c *Client) ZeroRun(off, n int64) (data, zero bool, length int64, err error) {
	if err := block.CheckRange(off, n); err != nil {
		return false, false, 0, err
	}
	if c.isClosed() {
		return false, false, 0, os.ErrClosed
	}
	if off >= c.size {
		return false, true, n, nil
	}
	if !c.haveMeta || n == 0 {
		// n == 0: no request (a BLOCK_STATUS of length 0 is EINVAL
		// to qemu-nbd and to this package's server).
		return true, false, min(n, c.size-off), nil
	}
	// The export's size is a multiple of a (goOption): so is the end.
	a := c.align()
	q := alignDown(off, a)
	m := min(alignUp(off+min(n, c.size-off), a), c.size) - q
	m = min(m, maxZero)
	k, err := c.do(cmdBlockStatus, 0, q, uint32(m), nil, nil)
	if err != nil {
		return false, false, 0, opErr("nbd block status", q, m, err)
	}
	if len(k.ext) == 0 || k.ext[0].n == 0 {
		return false, false, 0, &ProtocolError{"block status without an extent"}
	}
	run, f := int64(k.ext[0].n), k.ext[0].flags
	if run%a != 0 {
		if run > a {
			run = alignDown(run, a)
		} else {
			run, f = a, 0
		}
	}
	run = min(run, m) - (off - q)
	return f&StateHole == 0, f&StateZero != 0, min(run, n), nil
}

// ErrSizeUnknown is AllocatedSize's answer: an export does not say how
// much space it takes (qemu-img info: "disk size: unavailable").
var ErrSizeUnknown = errors.New("nbd: an export's allocated size is not known")

// AllocatedSize is not known for an export.
func (c *Client) AllocatedSize() (int64, error) { return 0, ErrSizeUnknown }

// errCloseTimeout fails the requests Close cut off.
var errCloseTimeout = errors.New("nbd: closed with the request in flight: the server did not answer in time")

// Close waits for the requests in flight, flushes the writes sent since
// the last flush, as QEMU's bdrv_close flushes a node before its driver
// closes, tells the server it is leaving (NBD_CMD_DISC) and closes the
// connection. All of it within ClientOptions.CloseTimeout: then the
// connection is cut, and the requests still waiting fail. An error of
// the flush, or a connection that ended with writes not flushed, is
// Close's error: those writes may be lost.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return os.ErrClosed
	}
	c.closed = true
	var wait []*call
	for _, k := range c.pending {
		wait = append(wait, k)
	}
	c.mu.Unlock()
	// A deadline for every read and write left, the reader's and those
	// of requests blocked sending included (tls.Conn passes it on).
	c.nc.SetDeadline(time.Now().Add(c.closeTimeout))
	for _, k := range wait {
		<-k.done
	}
	var err error
	if c.dirty.Load() {
		err = c.flush(true)
	}
	c.mu.Lock()
	broken := c.broken
	c.mu.Unlock()
	if broken == nil {
		var h [28]byte
		binary.BigEndian.PutUint32(h[:4], magicRequest)
		binary.BigEndian.PutUint16(h[6:8], cmdDisc)
		c.wmu.Lock()
		c.nc.Write(h[:])
		c.wmu.Unlock()
	}
	cerr := c.nc.Close()
	<-c.readDone
	if errors.Is(cerr, net.ErrClosed) {
		cerr = nil
	}
	return cmp.Or(err, cerr)
}
