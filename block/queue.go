package block

import (
	"errors"
	"fmt"
	"time"
)

// Op is the kind of a queued request.
type Op uint8

const (
	OpRead        Op = iota + 1 // fill Buf from Off
	OpWrite                     // write Buf at Off
	OpFlush                     // make writes completed before it durable (B6)
	OpWriteZeroes               // WriteZeroes(Off, Len, Flags) (B3, B4)
	OpDiscard                   // Discarder.Discard(Off, Len); ErrNotSupported without one
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "read"
	case OpWrite:
		return "write"
	case OpFlush:
		return "flush"
	case OpWriteZeroes:
		return "write-zeroes"
	case OpDiscard:
		return "discard"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Req is one request on a Queue. The caller fills Op, Off, Buf (reads
// and writes) or Len (zeroing, with Flags; discard), and User; the queue
// sets Err when the request completes. From Submit until Wait returns
// it, the request and its buffer belong to the queue (A2).
type Req struct {
	Op    Op
	Off   int64
	Buf   []byte
	Len   int64  // OpWriteZeroes, OpDiscard: the length of the range
	Flags Flags  // OpWriteZeroes: Allocate, MayUnmap (Caps.ZeroFlags)
	User  uint64 // the caller's tag, returned unchanged
	Err   error  // the result, set at completion
}

// Discarder is an optional Device extension: Discard deallocates
// [off, off+n) (a TRIM), after which the range reads as whatever the
// device defines (a qcow2 image: zeros, or its backing file's bytes on a
// version 2 image). Unlike WriteZeroes with MayUnmap it promises no
// zeros, and a device may leave parts of the range as they were (qcow2:
// partial clusters).
type Discarder interface {
	Discard(off, n int64) error
}

// Queue is an asynchronous request queue on a device, owned by one
// goroutine at a time (A1 in the package doc): many requests go in with
// one call and their completions come out in batches, with no goroutine
// per request. Each request has the meaning the Device method of the
// same kind has (B1-B6; a discard: Discarder's).
type Queue interface {
	// Submit starts reqs. At most the queue's depth may be in flight;
	// beyond that it fails with ErrQueueFull having started none of
	// them. A nil request fails the call with ErrNilReq, having started
	// none of them.
	Submit(reqs ...*Req) error
	// Wait blocks until at least min requests have completed (fewer when
	// fewer are in flight, or when Wake was called) and stores up to
	// len(out) of them in out, returning how many. Each has Err set.
	Wait(out []*Req, min int) (int, error)
	// Wake makes a Wait that is blocked, or the next one, return early.
	// Any goroutine may call it.
	Wake()
	// InFlight is the number of requests submitted and not yet returned
	// by Wait.
	InFlight() int
	// Close waits for every request in flight and releases the queue;
	// their completions are dropped.
	Close() error
}

// MaxQueueDepth bounds a queue's depth: a deeper one is ErrRange, from
// every Queuer here and NewGoQueue (a queue's slots are allocated when
// it opens, so an unchecked depth could ask for all memory at once).
const MaxQueueDepth = 1 << 16

// Queuer is an optional Device extension: a device with its own
// asynchronous path (an io_uring, an engine's fast path) opens queues on
// itself, of a depth from 1 to MaxQueueDepth (else ErrRange). NewQueue
// gives every device a Queue.
type Queuer interface {
	NewQueue(depth int) (Queue, error)
}

// ErrQueueFull: Submit would put more requests in flight than the
// queue's depth.
var ErrQueueFull = errors.New("block: queue full")

// ErrNilReq: Submit was given a nil *Req. Submit checks for it before it
// starts anything, so that the queue's count of requests in flight stays
// true (a request counted and never completed would keep Close, and the
// device's Close, waiting for ever).
var ErrNilReq = errors.New("block: nil request")

// CheckReqs is the check every Queue's Submit makes first: ErrNilReq if
// one of reqs is nil.
func CheckReqs(reqs []*Req) error {
	for _, r := range reqs {
		if r == nil {
			return ErrNilReq
		}
	}
	return nil
}

// BufRegisterer is a Queue that can register its caller's buffers with
// the device once, so that a request whose buffer lies inside one of them
// does not pin its pages anew (uring: READ_FIXED and WRITE_FIXED). No
// request may be in flight (ErrBusy). The buffers must stay allocated
// until the queue is closed or they are replaced; a later call replaces
// them. Optional: a request outside them, or on a queue that has none,
// has the same result, and a refusal (the locked-memory limit) only
// leaves them unregistered.
type BufRegisterer interface {
	RegisterBuffers(bufs ...[]byte) error
}

// NewQueue opens a queue of the given depth on d: d's own when it is a
// Queuer that has one (not ErrNotSupported), else one that runs each
// request on a goroutine (GoQueue).
func NewQueue(d Device, depth int) (Queue, error) {
	if qr, ok := d.(Queuer); ok {
		q, err := qr.NewQueue(depth)
		if !errors.Is(err, ErrNotSupported) {
			return q, err
		}
	}
	return NewGoQueue(d, depth)
}

// VecQueuer is a device that can open a vector queue: a Queue on which
// the requests of one Submit that follow each other on the device (each
// starting where the one before ends) reach it as one vectored request,
// even when the device does not merge writes itself (B10). A caller with
// one vector to write submits its pieces in one Submit; requests of
// different Submit calls are never merged.
type VecQueuer interface {
	NewVecQueue(depth int) (Queue, error)
}

// NewVecQueue opens d's vector queue (VecQueuer), or NewQueue's queue
// when d has none: the pieces then go as separate requests, with the
// same results.
func NewVecQueue(d Device, depth int) (Queue, error) {
	if vq, ok := d.(VecQueuer); ok {
		q, err := vq.NewVecQueue(depth)
		if !errors.Is(err, ErrNotSupported) {
			return q, err
		}
	}
	return NewQueue(d, depth)
}

// Do runs one request synchronously on d through its Device methods: the
// reference meaning of a queued request, and the slow path of queues. A
// panic in them becomes the request's error, a *PanicError (A4).
func Do(d Device, r *Req) (err error) {
	defer RecoverInto(&err)
	var v [1][]byte
	v[0] = r.Buf
	switch r.Op {
	case OpRead:
		return d.Readv(r.Off, v[:])
	case OpWrite:
		return d.Writev(r.Off, v[:])
	case OpFlush:
		return d.Flush()
	case OpWriteZeroes:
		return d.WriteZeroes(r.Off, r.Len, r.Flags)
	case OpDiscard:
		if dd, ok := d.(Discarder); ok {
			return dd.Discard(r.Off, r.Len)
		}
		return ErrNotSupported
	}
	return fmt.Errorf("block: bad queued op %v", r.Op)
}

// Drain waits on q until nothing is in flight, dropping the completions:
// the first step of a queue's Close (A6). It goes on past errors of Wait,
// since requests still in flight hold buffers and locks, and gives up,
// with the last error, only after a thousand failed waits a millisecond
// apart.
func Drain(q Queue) error {
	out := make([]*Req, max(q.InFlight(), 1))
	var werr error
	for tries := 0; q.InFlight() > 0 && tries < 1000; {
		if len(out) < q.InFlight() {
			out = make([]*Req, q.InFlight())
		}
		if _, err := q.Wait(out, q.InFlight()); err != nil {
			werr = err
			tries++
			time.Sleep(time.Millisecond)
		}
	}
	return werr
}
