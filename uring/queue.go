//go:build linux

package uring

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Queue is a block.Queue on a File: an io_uring of its own, owned by one
// goroutine (block A1), so it needs none of the shared ring's leader
// rules (R2, R3, R7, R8). Submit fills one SQE per request and submits
// them all with one io_uring_enter; Wait reaps CQEs and enters the
// kernel to wait only when none are there. No goroutine runs per
// request and none is handed a completion. The rules are U10-U12 in
// doc.go.
type Queue struct {
	f     *File
	r     *ring
	depth int

	slots  []qslot
	free   []uint32 // free slot indices (a stack)
	flight int      // submitted and not yet returned by Wait
	sqes   int      // request SQEs on the ring (merged requests share one: U13)
	toSub  uint32   // SQEs filled and not yet consumed by the kernel
	ready  []*block.Req

	// The slow path (U10, A4): requests the ring does not take run through
	// the File's own methods on a goroutine and land in done; wake
	// brings the owner out of the kernel for them.
	done  block.Completions
	slow  sync.WaitGroup
	nslow int // slow requests not yet taken from done

	// Waking (U11, A5): an eventfd whose read is always armed on the ring;
	// writing it completes that read. sleeping is set while the owner
	// is (about to be) blocked in io_uring_enter.
	efd      int
	efdBuf   []byte
	armed    bool
	sleeping atomic.Bool
	woken    atomic.Bool

	fixed  []fixedBuf // caller buffers registered with RegisterBuffers
	pinned [][]byte   // ... kept reachable while registered
	closed bool
	// enterErr is the last failed enter of a Submit, reported by Wait if
	// no enter there succeeds.
	enterErr error
	// noArm keeps reap from arming the eventfd read again
	// (RegisterBuffers and Close take it back).
	noArm bool
	// The eventfd read is linked to a timeout of zero (U11): when the
	// read completes, the timeout fires at once, and a timeout that
	// fires ends every wait in the kernel, however many completions it
	// asked for. ntmo counts those timeouts not yet reaped; tmoTs is
	// their (zero) timespec. Without IORING_OP_TIMEOUT (linkWake false)
	// a wait is for one completion.
	linkWake bool
	ntmo     int
	tmoTs    unix.Timespec
	// kickMu orders kicks (any goroutine) against closing the eventfd:
	// a kick after Close would write to whatever file reuses the number.
	kickMu    sync.Mutex
	efdClosed bool

	// The last data SQE pushed and not yet published (U13): a request
	// that continues it rides on it. mergeT is its SQ position.
	merge     bool
	mergeOK   bool
	mergeT    uint32
	mergeSlot uint32
	mergeEnd  int64
	mergeLen  int64
}

// qslot is one request on the ring.
type qslot struct {
	req   *block.Req
	locks qlocks
	// Merging (U13): a slot whose SQE carries later requests too lists
	// them in riders, and its iovec array holds every buffer of the run.
	riders []uint32
	iov    []unix.Iovec
}

// qlocks are the File's locks a request holds until it is reaped.
type qlocks uint8

const (
	lockWMU qlocks = 1 << iota // File.wmu shared (U1): an O_DIRECT write
	lockEOF                    // File.eofGate shared (U3): a write ending past eof
)

// fixedBuf is a registered buffer: [base, base+n) at index idx.
type fixedBuf struct {
	base, n uint64
	idx     uint16
}

// wakeTag is the user_data of the eventfd read (U11, A5).
const wakeTag = ^uint64(0)

// wakeTmoTag is the user_data of the timeout linked to it (U11).
const wakeTmoTag = ^uint64(0) - 1

var (
	_ block.Queuer        = (*File)(nil)
	_ block.Queue         = (*Queue)(nil)
	_ block.BufRegisterer = (*Queue)(nil)
)

// NewQueue implements block.Queuer: a Queue of the given depth on f. The
// queue holds the File open (U12, A6): Close waits until it is closed. A File
// without io_uring (Backend Threads, or a kernel without
// IORING_OP_READ/WRITE) returns block.ErrNotSupported, and
// block.NewQueue then runs requests on goroutines.
func (f *File) NewQueue(depth int) (block.Queue, error) {
	return asQueue(f.newQueue(depth, f.mergesWrites()))
}

// NewVecQueue implements block.VecQueuer: a Queue that merges the
// contiguous requests of one Submit (U13) even when f's merging is off.
func (f *File) NewVecQueue(depth int) (block.Queue, error) {
	return asQueue(f.newQueue(depth, true))
}

// asQueue returns a nil interface, not a nil *Queue in one, on error.
func asQueue(q *Queue, err error) (block.Queue, error) {
	if err != nil {
		return nil, err
	}
	return q, nil
}

func (f *File) newQueue(depth int, merge bool) (*Queue, error) {
	if depth < 1 || depth > block.MaxQueueDepth {
		return nil, block.ErrRange
	}
	if depth > maxEntries {
		// Deeper than a ring this size: block.NewQueue falls back to
		// its goroutine queue (qemu-img bench -d 10000 runs).
		return nil, fmt.Errorf("%w: a queue of depth %d (a ring takes %d)", block.ErrNotSupported, depth, maxEntries)
	}
	if f.backend != Ring || !probeOps().has(iosys.IORING_OP_READ) {
		return nil, block.ErrNotSupported
	}
	if err := f.enter(); err != nil {
		return nil, err
	}
	q, err := f.openQueue(depth, merge)
	if err != nil {
		f.life.RUnlock()
		return nil, err
	}
	return q, nil
}

func (f *File) openQueue(depth int, merge bool) (*Queue, error) {
	// One slot more than depth for the eventfd read.
	r, err := newRing(depth+1, &f.m)
	if err != nil {
		return nil, err
	}
	r.register(f.fd, !f.readOnly)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		r.close()
		return nil, err
	}
	q := &Queue{f: f, r: r, depth: depth, efd: efd, efdBuf: make([]byte, 8),
		slots: make([]qslot, depth), free: make([]uint32, depth), merge: merge}
	q.linkWake = probeOps().Has(iosys.IORING_OP_TIMEOUT)
	for i := range q.free {
		q.free[i] = uint32(depth - 1 - i)
	}
	if q.merge {
		for i := range q.slots {
			q.slots[i].iov = make([]unix.Iovec, 0, mergeIov)
			q.slots[i].riders = make([]uint32, 0, mergeIov)
		}
	}
	q.arm()
	if err := q.enter(0, 0); err != nil {
		unix.Close(efd)
		r.close()
		return nil, err
	}
	return q, nil
}

// RegisterBuffers registers bufs with the ring (IORING_REGISTER_BUFFERS,
// with the shared zero buffer first): a request whose buffer lies inside
// one of them is a READ_FIXED or WRITE_FIXED, so the kernel pins its pages
// once instead of per request. No request may be in flight; the buffers
// must stay allocated until the queue is closed or they are replaced.
func (q *Queue) RegisterBuffers(bufs ...[]byte) error {
	if q.closed {
		return block.ErrClosed
	}
	if q.flight != 0 || q.nslow != 0 {
		return block.ErrBusy
	}
	// Take the eventfd read back first: before Linux 5.13 registering
	// waits for the ring to be idle, which an armed read never is.
	// rearm even when disarm fails: its kick may have completed the
	// read already, and a read left unarmed loses every later wake-up
	// (A5).
	defer q.rearm()
	if err := q.disarm(); err != nil {
		return err
	}
	iov := make([]unix.Iovec, 0, len(bufs)+1)
	z := block.ZeroBuf()
	all := append([][]byte{z}, bufs...)
	for _, b := range all {
		iov = append(iov, bufIovec(b))
	}
	if q.r.feat.zeroLen != 0 || q.fixed != nil {
		if err := iosys.IOURingRegister(q.r.fd, iosys.IORING_UNREGISTER_BUFFERS, nil, 0); err != nil {
			return err
		}
		q.r.feat.zeroBase, q.r.feat.zeroLen, q.fixed = 0, 0, nil
	}
	if err := iosys.IOURingRegister(q.r.fd, iosys.IORING_REGISTER_BUFFERS, unsafe.Pointer(&iov[0]), uint32(len(iov))); err != nil {
		return err
	}
	q.r.feat.zeroBase, q.r.feat.zeroLen = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(z)))), uint64(len(z))
	for i, b := range bufs {
		q.fixed = append(q.fixed, fixedBuf{base: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), n: uint64(len(b)), idx: uint16(i + 1)})
	}
	q.pinned = append([][]byte(nil), bufs...)
	return nil
}

// disarm takes the eventfd read back (U11): it kicks the eventfd and
// reaps until the completions of the read and of its timeout came,
// without arming it again.
func (q *Queue) disarm() error {
	q.noArm = true
	for q.armed || q.ntmo > 0 {
		if q.armed {
			q.kick() // else only its timeout is left, about to fire
		}
		if err := q.enter(1, 0); err != nil {
			return err
		}
		if testDisarmErr != nil {
			return testDisarmErr
		}
		q.reap()
	}
	return nil
}

// testDisarmErr, when set by a test, is what disarm returns after its
// enter, as a failed enter would (a fault injected there).
var testDisarmErr error

// rearm arms the eventfd read again after disarm.
func (q *Queue) rearm() {
	q.noArm = false
	if !q.armed && !q.closed {
		q.arm()
		q.enterErr = q.enter(0, 0)
	}
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
	for _, req := range reqs {
		q.start(req)
	}
	if q.toSub > 0 {
		// The requests are the queue's now (A2): an enter that fails
		// leaves their SQEs for Wait's enters, which report it.
		q.enterErr = q.enter(0, 0)
	}
	return nil
}

// start routes one request: to the ring when the File would send it
// straight to the kernel (U10, A3), else to the slow path (U10, A4).
func (q *Queue) start(req *block.Req) {
	f := q.f
	req.Err = nil
	n := int64(len(req.Buf))
	switch req.Op {
	case block.OpFlush:
		// File's own flush, on the slow path (A4): fdatasync calls are
		// serialised and their failures stick (U14), so a flush may wait
		// for another, which the owner must not.
		q.goSlow(req, 0)
		return
	case block.OpWriteZeroes:
		// fallocate, or zeros written when it is refused (U2): always
		// the File's own method, on the slow path (A4).
		if err := f.checkWrite(req.Off, req.Len, req.Flags); err != nil {
			req.Err = err
			q.ready = append(q.ready, req)
			return
		}
		q.goSlow(req, 0)
		return
	case block.OpDiscard:
		req.Err = block.ErrNotSupported // a File is no Discarder (block A2)
		q.ready = append(q.ready, req)
		return
	case block.OpRead, block.OpWrite:
	default:
		req.Err = errors.New("uring: bad queued op " + req.Op.String())
		q.ready = append(q.ready, req)
		return
	}
	write := req.Op == block.OpWrite
	if err := block.CheckRange(req.Off, n); err != nil {
		req.Err = err
		q.ready = append(q.ready, req)
		return
	}
	if write && f.readOnly {
		req.Err = block.ErrReadOnly
		q.ready = append(q.ready, req)
		return
	}
	if write {
		// As Writev (U15, A2): a write crossing a block device's end
		// fails before the kernel, which would write the part inside.
		if err := f.checkDevice("write", req.Off, n); err != nil {
			req.Err = err
			q.ready = append(q.ready, req)
			return
		}
	}
	if n == 0 {
		q.ready = append(q.ready, req)
		return
	}
	if n > maxRW || (f.direct && !f.fast(req.Off, n, [][]byte{req.Buf})) {
		q.goSlow(req, 0)
		return
	}
	// Never block the owner on the File's locks (U10, A3): an exclusive
	// holder may wait for this queue's own requests to be reaped.
	var locks qlocks
	if write && req.Off+n > f.eof.Load() {
		if !f.eofGate.TryRLock() {
			q.goSlow(req, 0)
			return
		}
		locks |= lockEOF
	} else if write && f.testEOFLooked != nil {
		f.testEOFLooked()
	}
	if write && f.direct {
		if !f.wmu.TryRLock() {
			q.unlock(req, locks, false)
			q.goSlow(req, 0)
			return
		}
		locks |= lockWMU
		// A Truncate may have shrunk the file below the write's end
		// since eof was looked at; none can while wmu is held (U3,
		// File.lockWMU). A Try: this goroutine holds wmu now.
		if locks&lockEOF == 0 && req.Off+n > f.eof.Load() {
			if !f.eofGate.TryRLock() {
				q.unlock(req, locks, false)
				q.goSlow(req, 0)
				return
			}
			locks |= lockEOF
		}
	}
	if q.ride(req, write, locks) {
		return
	}
	i := q.queue(req, q.rwSQE(write, req), locks)
	if q.merge {
		q.mergeOK, q.mergeT, q.mergeSlot = true, q.r.tail-1, i
		q.mergeEnd, q.mergeLen = req.Off+n, n
	}
}

// ride puts req on the last data SQE when it continues it (U13): same
// kind, starting where that SQE's run ends, within mergeBytes and
// mergeIov. The SQE is not published yet, so it is rewritten as a
// readv/writev of the whole run.
func (q *Queue) ride(req *block.Req, write bool, locks qlocks) bool {
	if !q.mergeOK {
		return false
	}
	h := &q.slots[q.mergeSlot]
	n := int64(len(req.Buf))
	if (h.req.Op == block.OpWrite) != write || req.Off != q.mergeEnd ||
		q.mergeLen+n > mergeBytes || len(h.iov) >= mergeIov-1 {
		return false
	}
	if len(h.iov) == 0 {
		h.iov = append(h.iov, bufIovec(h.req.Buf))
	}
	h.iov = append(h.iov, bufIovec(req.Buf))
	i := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	q.slots[i].req, q.slots[i].locks = req, locks
	h.riders = append(h.riders, i)
	q.mergeEnd += n
	q.mergeLen += n
	q.r.fill(q.mergeT, vecSQE(write, int32(q.f.fd), h.req.Off, h.iov), uint64(q.mergeSlot))
	q.f.m.merged.Add(1)
	return true
}

// rwSQE is the SQE of a read or write of req's buffer: a fixed one when
// the buffer lies in a registered one.
func (q *Queue) rwSQE(write bool, req *block.Req) sqe {
	addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(req.Buf))))
	e := sqe{op: iosys.IORING_OP_READ, fd: int32(q.f.fd), addr: addr, len: uint32(len(req.Buf)), off: uint64(req.Off)}
	if write {
		e.op = iosys.IORING_OP_WRITE
	}
	for _, fb := range q.fixed {
		if addr >= fb.base && addr+uint64(len(req.Buf)) <= fb.base+fb.n {
			e.op = iosys.IORING_OP_READ_FIXED
			if write {
				e.op = iosys.IORING_OP_WRITE_FIXED
			}
			e.buf, e.hasBuf = fb.idx, true
			break
		}
	}
	return e
}

// queue fills req's SQE in a free slot and returns the slot; the next
// enter submits it.
func (q *Queue) queue(req *block.Req, e sqe, locks qlocks) uint32 {
	i := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	q.slots[i].req, q.slots[i].locks = req, locks
	q.push(e, uint64(i))
	q.sqes++
	return i
}

// push fills an SQE at the tail; enter publishes it (R1). The SQ holds
// 2*(depth+1) entries and at most depth+3 SQEs are on the ring or
// filled (one per request, the eventfd read and its timeout, and an
// earlier timeout about to fire), so it never overflows (R4).
func (q *Queue) push(e sqe, ud uint64) {
	r := q.r
	r.fill(r.tail, e, ud)
	r.tail++
	q.toSub++
	q.mergeOK = false
}

// publish makes every filled SQE visible to the kernel (R1): after it no
// SQE is rewritten, so nothing rides on them any more.
func (q *Queue) publish() {
	r := q.r
	if r.sqTail.Load() != r.tail {
		r.countFixed(r.sqTail.Load(), r.tail)
		r.sqTail.Store(r.tail)
		r.pubGen.Add(1)
	}
	q.mergeOK = false
}

// arm queues the eventfd read (U11, A5).
func (q *Queue) arm() {
	e := sqe{op: iosys.IORING_OP_READ, fd: int32(q.efd), addr: uint64(uintptr(unsafe.Pointer(&q.efdBuf[0]))), len: 8}
	if q.linkWake {
		e.flags = iosys.IOSQE_FLAGS_IO_LINK
	}
	q.push(e, wakeTag)
	q.armed = true
	if q.linkWake {
		// A pure timeout (count 0) of zero, started when the read
		// completes: its firing ends the owner's wait (U11).
		q.push(sqe{op: iosys.IORING_OP_TIMEOUT, fd: -1, addr: uint64(uintptr(unsafe.Pointer(&q.tmoTs))), len: 1}, wakeTmoTag)
		q.ntmo++
	}
}

// enter submits every filled SQE and, with wait > 0, waits for that
// many completions. A refusal to take SQEs for now (EAGAIN, EBUSY:
// completions must be reaped first) leaves them for the next enter.
func (q *Queue) enter(wait uint32, flags uint32) error {
	if wait > 0 {
		flags |= iosys.IORING_ENTER_FLAGS_GETEVENTS
	}
	q.publish()
	for {
		q.f.m.enters.Add(1)
		n, err := enter(q.r.fd, q.toSub, wait, flags)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN || err == unix.EBUSY {
			return nil
		}
		if err != nil {
			return err
		}
		q.f.m.sqes.Add(uint64(n))
		q.toSub -= uint32(n)
		return nil
	}
}

// Wait implements block.Queue.
func (q *Queue) Wait(out []*block.Req, atLeast int) (int, error) {
	if q.closed {
		return 0, block.ErrClosed
	}
	atLeast = block.ClampWait(atLeast, q.flight, len(out))
	if atLeast == 0 {
		q.reap() // a poll still takes what the kernel completed
	}
	n := 0
	for {
		n += q.take(out[n:])
		if n >= atLeast || q.woken.Swap(false) {
			q.flight -= n
			return n, nil
		}
		if q.enterErr != nil {
			if q.enterErr = q.enter(0, 0); q.enterErr != nil {
				q.flight -= n
				return n, q.enterErr
			}
		}
		if q.reap() > 0 || q.done.Len() > 0 {
			continue
		}
		// Nothing is ready: sleep in the kernel until a CQE comes. A slow
		// completion or a Wake that raced with the check below writes the
		// eventfd, whose read is armed (U11, A5).
		q.sleeping.Store(true)
		if q.done.Len() > 0 || q.woken.Load() {
			q.sleeping.Store(false)
			continue
		}
		// Wait in one enter for every completion still needed that can
		// come from the ring; the slow path's come through the eventfd,
		// which ends the wait at the latest when those ring requests
		// complete (U11, A5).
		// Merged requests share a CQE, so never more CQEs than there
		// are request SQEs on the ring.
		err := q.sleep(uint32(max(1, min(atLeast-n-q.nslow, q.sqes))))
		q.sleeping.Store(false)
		if err != nil {
			q.flight -= n
			return n, err
		}
	}
}

// sleep submits what is filled and waits in the kernel for want
// completions. A Wake completes the eventfd read, one completion; the
// timeout linked to it ends a wait for more (arm). Without it the wait
// is for one completion.
func (q *Queue) sleep(want uint32) error {
	if want > 1 && !q.linkWake {
		want = 1
	}
	return q.enter(want, 0)
}

// take moves completed requests (ring, then slow) into out.
func (q *Queue) take(out []*block.Req) int {
	k := block.MoveReqs(out, &q.ready)
	s := q.done.Take(out[k:])
	q.nslow -= s
	return k + s
}

// reap handles every CQE there is and returns how many it handled.
func (q *Queue) reap() int {
	r := q.r
	head := r.cqHead.Load()
	tail := r.cqTail.Load()
	if head == tail {
		if q.toSub > 0 {
			q.enter(0, 0)
		}
		return 0
	}
	q.f.m.cqes.Add(uint64(tail - head))
	for ; head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		q.complete(c.UserData(), c.Result())
	}
	r.cqHead.Store(head)
	if !q.armed && !q.closed && !q.noArm {
		q.arm()
	}
	if q.toSub > 0 {
		q.enter(0, 0)
	}
	return 1
}

// complete handles one CQE (R6 for the ring's requests; odd results go
// to the slow path, which has all of the File's rules).
func (q *Queue) complete(ud uint64, res int32) {
	if ud == wakeTag {
		q.armed = false
		return
	}
	if ud == wakeTmoTag {
		q.ntmo--
		return
	}
	i := uint32(ud)
	s := &q.slots[i]
	req := s.req
	if again(res) {
		q.f.m.eagain.Add(1)
		var e sqe
		switch {
		case len(s.riders) > 0:
			e = vecSQE(req.Op == block.OpWrite, int32(q.f.fd), req.Off, s.iov)
		default:
			e = q.rwSQE(req.Op == block.OpWrite, req)
		}
		q.push(e, ud)
		return
	}
	q.sqes--
	if len(s.riders) > 0 {
		q.split(i, res)
		return
	}
	q.finish(i, res)
}

// split shares a merged SQE's result among its requests in order (U13):
// each gets its own bytes while the transfer reached them; one it did
// not fully reach, and every one after an error, finishes on the slow
// path, which gives each its own exact result.
func (q *Queue) split(i uint32, res int32) {
	h := &q.slots[i]
	riders := h.riders
	clear(h.iov)
	h.iov = h.iov[:0]
	rem := int64(res)
	if res <= 0 {
		q.f.m.mergeSplits.Add(1)
	}
	for k := -1; k < len(riders); k++ {
		j := i
		if k >= 0 {
			j = riders[k]
		}
		n := int64(len(q.slots[j].req.Buf))
		switch {
		case res < 0:
			q.finish(j, 0) // all of it again, alone
		default:
			got := min(rem, n)
			rem -= got
			q.finish(j, int32(got))
		}
	}
	h.riders = riders[:0]
}

// finish frees slot i, whose request's own result is res, and completes
// the request (R6: odd results go to the slow path, which has all of the
// File's rules).
func (q *Queue) finish(i uint32, res int32) {
	s := &q.slots[i]
	req := s.req
	q.unlock(req, s.locks, req.Op == block.OpWrite && int(res) == len(req.Buf))
	s.req, s.locks = nil, 0
	q.free = append(q.free, i)
	switch {
	case res < 0:
		req.Err = &block.OpError{Op: req.Op.String(), Off: req.Off, Len: int64(len(req.Buf)), Err: unix.Errno(-res)}
	case int(res) < len(req.Buf):
		// Short (or zero, past EOF): the File finishes the rest. A write
		// resumes from the aligned offset before (as xfer: those bytes
		// are ours), so the rest needs no read-modify-write.
		q.f.m.short.Add(1)
		if req.Op == block.OpWrite && q.f.direct {
			res -= int32(int64(res) % q.f.align)
		}
		q.goSlow(req, int(res))
		return
	}
	q.ready = append(q.ready, req)
}

// unlock releases the File's locks req held; a write past the known EOF
// that completed whole first raises it to its end (U3), as File.writev
// does.
func (q *Queue) unlock(req *block.Req, locks qlocks, written bool) {
	if written && locks&lockEOF != 0 { // under the gate only (U3, bumpEOF)
		q.f.bumpEOF(req.Off + int64(len(req.Buf)))
	}
	if locks&lockWMU != 0 {
		q.f.wmu.RUnlock()
	}
	if locks&lockEOF != 0 {
		q.f.eofGate.RUnlock()
	}
}

// goSlow runs req from byte done on through the File's own methods on a
// goroutine (U10, A4). The queue holds the File open (U12, A6), so these enter
// nothing.
func (q *Queue) goSlow(req *block.Req, done int) {
	q.nslow++
	q.f.m.queueSlow.Add(1)
	q.slow.Go(func() {
		f := q.f
		off := req.Off + int64(done)
		bufs := [][]byte{req.Buf[done:]}
		var err error
		switch req.Op {
		case block.OpRead:
			err = f.readv(off, bufs, int64(len(bufs[0])))
		case block.OpWrite:
			err = f.writev(off, bufs, int64(len(bufs[0])))
		case block.OpWriteZeroes:
			err = f.zeroes(req.Off, req.Len, req.Flags)
		case block.OpFlush:
			err = f.flush()
		}
		req.Err = err
		q.done.Put(req)
		if q.sleeping.Load() {
			q.kick()
		}
	})
}

// Wake implements block.Queue.
func (q *Queue) Wake() {
	q.woken.Store(true)
	if q.sleeping.Load() {
		q.kick()
	}
}

// kick completes the armed eventfd read (U11, A5). After Close it does
// nothing.
func (q *Queue) kick() {
	var one [8]byte
	one[0] = 1
	q.kickMu.Lock()
	if !q.efdClosed {
		unix.Write(q.efd, one[:])
	}
	q.kickMu.Unlock()
}

// InFlight implements block.Queue.
func (q *Queue) InFlight() int { return q.flight }

// Close implements block.Queue: it waits for every request (dropping
// their completions), takes the eventfd read back, and releases the ring
// and the File (U12, A6). Requests still in the kernel are waited for
// even when an enter fails (they hold buffers, and wmu: U10); only a
// ring that keeps failing is given up, with its error, after a while.
func (q *Queue) Close() error {
	if q.closed {
		return block.ErrClosed
	}
	// Every request is waited for, even past an error: requests in
	// flight hold buffers and locks (the data gate Q12, wmu U10).
	werr := block.Drain(q)
	q.slow.Wait()
	if err := q.disarm(); err != nil {
		werr = errors.Join(werr, err)
	}
	q.closed = true
	q.kickMu.Lock()
	q.efdClosed = true
	cerr := unix.Close(q.efd)
	q.kickMu.Unlock()
	err := errors.Join(werr, q.r.close(), cerr)
	q.f.life.RUnlock()
	return err
}
