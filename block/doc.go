// Package block is the narrow seam between the qcow2 engine and the storage
// under it: a Device reads and writes vectors of buffers at byte offsets,
// zeroes ranges with request flags modelled on QEMU's BDRV_REQ_*, flushes, and
// reports its size and capabilities.
//
// Invariants every Device implementation keeps (tests cite them as B1..B10;
// package blocktest checks them, and every device in the repository runs
// it):
//
//	B1  Safe for concurrent use. Requests that do not overlap never wait for
//	    each other; overlapping requests complete in some order, and no byte
//	    is torn finer than the device's alignment.
//	B2  Readv past the end of the device fills the rest of the buffers with
//	    zeros and succeeds (qcow2 tables and the last cluster may end less than
//	    a cluster past EOF).
//	B3  WriteZeroes with Allocate either zeroes the range efficiently, with
//	    space reserved (fallocate ZERO_RANGE, or WRITE_ZEROES: B9), or fails
//	    with ErrNotSupported having written nothing. It never falls back to
//	    writing zero buffers.
//	    A range not aligned to Caps().Align, or to Caps().ZeroAlign when
//	    that is set, is ErrNotSupported unless the device can still zero
//	    it efficiently because of what lies beside it (qcow2: each
//	    partial cluster at its edges reads as zeros and becomes a zero
//	    cluster); its outcome may then depend on requests beside it that
//	    are in flight at the same time, and a refusal caused by one (a
//	    write that filled an edge's cluster after the device looked)
//	    may come after part of the range was zeroed, as QEMU's block
//	    layer zeroes the head and middle before qcow2 refuses the tail.
//	    Either way no byte outside the range changes, and no byte inside
//	    it holds anything but its old contents or zeros.
//	B4  WriteZeroes without Allocate may fall back to writing zeros.
//	B5  Serialising|NoWait returns ErrBusy, without side effects, instead of
//	    waiting on an overlapping in-flight request, on a device whose
//	    Caps().ReqFlags has both; a device without them returns
//	    ErrNotSupported (see Caps).
//	B6  Flush makes every write that completed before Flush was called
//	    durable. Nothing else is promised to survive a power cut. A Flush
//	    that fails may have lost writes for good (Linux marks the pages
//	    whose write-back failed clean, and the next fdatasync succeeds):
//	    a device over such storage fails every later Flush too, with
//	    ErrFlushFailed, until it is reopened, so that no later success
//	    vouches for writes the failure lost.
//	B7  After Close, every method returns an error matching os.ErrClosed.
//	B8  A device that implements Locker takes image locks QEMU honours
//	    (QEMU's file-posix lock bytes, FDLocks: OSFile and uring's
//	    files) and drops them at Close; one that does not (memdev) takes
//	    none, and users that need locks must say so.
//	B9  Caps().AllocWritten is a hint: when set, WriteZeroes with Allocate
//	    leaves the range written (Linux FALLOC_FL_WRITE_ZEROES: written
//	    extents the device zeroed) rather than unwritten (ZERO_RANGE's
//	    unwritten extents, whose first writes each convert an extent). It
//	    promises nothing beyond B3: the range reads as zeros either way,
//	    and a device may clear the bit later (a refused mode) while an
//	    engine that read it at open goes on believing it; that costs
//	    speed, never bytes.
//	B10 Caps().MergesWrites is a hint too: adjacent writes in flight
//	    together may reach the host as one request (uring's merging, R8).
//	    An engine may write more bytes per request when they will merge
//	    into large sequential writes; it changes no result of a request.
//
// A Queue (queue.go) is the asynchronous way in: requests go in by the
// batch and completions come out by the batch, with no goroutine per
// request. Every Queue keeps these (RunQueue in blocktest checks them):
//
//	A1  One owner. Submit, Wait, InFlight and Close are called by one
//	    goroutine at a time; Wake by any.
//	A2  Same meaning as the Device. A queued read, write, flush or
//	    zeroing means what Readv, Writev, Flush or WriteZeroes means
//	    (B1-B6), a queued discard what the device's Discard means (Discarder;
//	    ErrNotSupported on a device without one): a write or zeroing Wait
//	    has returned is seen by every later read, and a flush makes every
//	    write and zeroing returned before its Submit durable. Requests in
//	    flight together have no order among them. Between Submit and the
//	    Wait that returns it, the Req and its buffer are the queue's.
//	A3  The owner never blocks on another goroutine inside Submit: a lock
//	    the fast path needs is tried, and a request that cannot have it
//	    goes to the slow path. Whoever waits for the queue's requests
//	    waits for the owner to reap them, so the owner must keep calling
//	    Wait while requests are in flight, and must not itself call, with
//	    requests in flight, a method that waits for them: on a qcow2
//	    image Discard, WriteZeroes, Truncate, Shrink, CreateSnapshot,
//	    ApplySnapshot, Close; on a uring.File Truncate, a misaligned O_DIRECT write or
//	    WriteZeroes, a WriteZeroes or ZeroThenWritev that extends the
//	    file, Close, and while another goroutine may call one of those,
//	    any write or zeroing on an O_DIRECT File or past the File's end
//	    (its lock, taken shared, queues behind that call, which waits for
//	    the queue). (Queue the zeroing or discard instead, drain first,
//	    or call them from another goroutine.)
//	A4  Slow path. A request the fast path does not take runs through the
//	    device's synchronous methods on a goroutine, with all their rules,
//	    and completes through the same Wait. A panic in those methods
//	    fails that request with a *PanicError (Do); it does not end the
//	    process, as it would on a goroutine the owner cannot see.
//	A5  No lost wake-up: a slow completion or a Wake reaches an owner
//	    blocked in Wait.
//	A6  Lifetime. Close waits for every request in flight. A device never
//	    closes under an open queue: it waits for the queue's Close or
//	    refuses to close.
//
// Buffer ownership: the device reads from (Writev) or fills (Readv) the
// caller's buffers only until the call returns; it keeps no reference.
package block
