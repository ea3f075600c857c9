//go:build linux

package uring

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// ring is one io_uring instance with a preallocated request-slot table.
// Many goroutines submit concurrently; whichever waiter holds enterMu (the
// leader) submits everything queued and reaps for everybody (R2, R3 in
// doc.go).
type ring struct {
	fd int

	sqMem, cqMem, sqeMem []byte

	// Shared ring indices, see doc.go R1 for the ordering rules.
	sqHead *atomic.Uint32 // written by the kernel
	sqTail *atomic.Uint32 // written by us (under mu)
	// pubGen is bumped with every store to *sqTail. The SQ lives in
	// kernel-shared memory, where the race detector (and the Go memory
	// model's view of it) sees no synchronisation; this Go-memory atomic
	// carries the happens-before edge from a publish to the reaper.
	pubGen  atomic.Uint32
	sqFlags *atomic.Uint32 // written by the kernel
	sqMask  uint32
	sqSize  uint32
	sqes    []iosys.SubmissionQueueEntry64

	cqHead     *atomic.Uint32 // written by us (under enterMu)
	cqTail     *atomic.Uint32 // written by the kernel
	cqOverflow *atomic.Uint32 // written by the kernel
	cqMask     uint32
	cqes       []iosys.CompletionQueueEvent16

	mu   sync.Mutex // serialises SQE filling and the tail store
	tail uint32     // end of the SQEs we filled (staged ones too), guarded by mu

	// Merging (R8): data SQEs in [*sqTail, tail) are staged: filled but
	// not yet published, so a later request that continues one of them
	// can ride on it. qTail mirrors tail for lock-free checks; sqOwner
	// maps an SQ position to the slot that filled it.
	merge   bool
	qTail   atomic.Uint32
	sqOwner []uint32

	enterMu  sync.Mutex    // held by the leader: the only reaper
	leaderCh chan struct{} // cap 1: "somebody please lead" token
	waiting  atomic.Int32  // requests whose owners have not seen all results

	// SQ consumption (R7): every enter with to_submit > 0 computes it
	// under subMu; the leader releases subMu before its submit+wait enter
	// and publishes the tail it submits up to in leaderEnd.
	subMu     sync.Mutex
	leaderIn  atomic.Bool
	leaderEnd atomic.Uint32

	slots []slot
	free  chan uint32 // indices of free slots

	lastOverflow uint32 // guarded by enterMu
	woke         bool   // guarded by enterMu: the last reap woke waiters
	m            *counters

	// Test hooks, set by tests before any request and cleared after the
	// last. testQueued runs after a data request is queued (or staged,
	// R8) and before its owner waits, so a test can stage a whole batch
	// before any enter; testSplit replaces the result of every merged SQE.
	testQueued func()
	testSplit  func(res int32) int32
}

// slot is one request: up to two linked SQEs (user_data = idx*2 + k).
type slot struct {
	// res is atomic only for the race detector: the kernel orders the
	// owner's last read before the next CQE for this slot, which the
	// detector cannot see.
	res  [2]atomic.Int32 // written by the leader before signalling ch
	ch   chan struct{}   // cap 2, one signal per CQE
	iov  []unix.Iovec    // iovec array the kernel reads; reused
	iov2 []unix.Iovec    // second SQE's iovec (linked chain)

	// Merging (R8). Set under ring.mu while the slot's SQE is staged;
	// read by the reaper after nRiders (atomic) has published them.
	write   bool
	fd      int32
	off     int64    // start of the run this slot's SQE carries
	end     int64    // end of that run (own bytes plus riders')
	own     int64    // this request's own bytes
	nOwn    int      // this request's own iovecs (a prefix of iov)
	riders  []uint32 // slots whose data rides on this slot's SQE
	nRiders atomic.Int32
	noMerge bool // a merged SQE this request rode on failed: retry alone
}

const maxIov = 1024 // IOV_MAX

// Merge limits (R8): iovecs per merged SQE (each slot's iov has this
// capacity, so a merge never reallocates an array the kernel may read),
// bytes per merged SQE, and how many staged SQEs a request looks back.
const (
	mergeIov   = 64
	mergeBytes = 1 << 20
	mergeScan  = 32
)

// submitThreshold: a waiter that is not the leader submits its own SQE
// only while fewer than this many SQEs are in the kernel; otherwise a
// completion is coming and the leader's next enter submits the batch.
// Measured on a 2-vCPU VM, O_DIRECT 4 KiB writes at QD64: always
// submitting gives ~1 SQE per enter; 8 gave 10-20 before merging (R8).
// With merging one SQE may carry dozens of requests, and 8 made waiters
// submit merged SQEs one at a time (2.5x the enters, seed run 3.4 s);
// 1 (submit only when the kernel has nothing) gives 2.1 s there, and
// random 4 KiB writes (no merges) measured the same with 1 or 8.
const submitThreshold = 1

// newRing sets up a ring for nslots concurrent requests.
func newRing(nslots int, m *counters) (*ring, error) {
	var p iosys.IOURingParams
	// Each slot may hold two SQEs (a linked chain), so size the SQ at
	// 2*nslots: unsubmitted SQEs can then never exceed the SQ, and with the
	// kernel's default CQ of 2*SQ the CQ cannot overflow either.
	fd, err := iosys.IOURingSetup(uint(2*nslots), &p)
	if err != nil {
		return nil, err
	}
	r := &ring{fd: fd, m: m}
	if err := r.mmap(&p); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if r.sqSize < uint32(2*nslots) || uint32(len(r.cqes)) < r.sqSize {
		r.unmap()
		unix.Close(fd)
		return nil, fmt.Errorf("uring: ring too small: sq %d cq %d", r.sqSize, len(r.cqes))
	}
	r.leaderCh = make(chan struct{}, 1)
	r.sqOwner = make([]uint32, r.sqSize)
	r.slots = make([]slot, nslots)
	r.free = make(chan uint32, nslots)
	for i := range r.slots {
		r.slots[i].ch = make(chan struct{}, 2)
		r.slots[i].iov = make([]unix.Iovec, 0, mergeIov)
		r.slots[i].riders = make([]uint32, 0, mergeIov)
		r.slots[i].iov2 = make([]unix.Iovec, 0, 4)
		r.free <- uint32(i)
	}
	return r, nil
}

func (r *ring) mmap(p *iosys.IOURingParams) error {
	sqLen := int(p.SQOffset.Array + p.SQEntries*4)
	cqLen := int(p.CQOffset.Cqes + p.CQEntries*uint32(unsafe.Sizeof(iosys.CompletionQueueEvent16{})))
	single := p.Features&iosys.IORING_FEAT_SINGLE_MMAP != 0
	if single && cqLen > sqLen {
		sqLen = cqLen
	}
	var err error
	r.sqMem, err = unix.Mmap(r.fd, int64(iosys.IORING_OFF_SQ_RING), sqLen,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: mmap sq: %w", err)
	}
	if single {
		r.cqMem = r.sqMem
	} else {
		r.cqMem, err = unix.Mmap(r.fd, int64(iosys.IORING_OFF_CQ_RING), cqLen,
			unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			r.unmap()
			return fmt.Errorf("uring: mmap cq: %w", err)
		}
	}
	sqeSize := int(unsafe.Sizeof(iosys.SubmissionQueueEntry64{}))
	r.sqeMem, err = unix.Mmap(r.fd, int64(iosys.IORING_OFF_SQES), int(p.SQEntries)*sqeSize,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.unmap()
		return fmt.Errorf("uring: mmap sqes: %w", err)
	}
	sq := unsafe.Pointer(&r.sqMem[0])
	r.sqHead = (*atomic.Uint32)(unsafe.Add(sq, p.SQOffset.Head))
	r.sqTail = (*atomic.Uint32)(unsafe.Add(sq, p.SQOffset.Tail))
	r.sqFlags = (*atomic.Uint32)(unsafe.Add(sq, p.SQOffset.Flags))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.SQOffset.RingMask))
	r.sqSize = *(*uint32)(unsafe.Add(sq, p.SQOffset.RingEntries))
	// Identity-map the SQ index array once; we fill sqes[tail&mask] in
	// place. The kernel reads array[] only after our release store of tail.
	arr := unsafe.Slice((*uint32)(unsafe.Add(sq, p.SQOffset.Array)), r.sqSize)
	for i := range arr {
		arr[i] = uint32(i)
	}
	r.sqes = unsafe.Slice((*iosys.SubmissionQueueEntry64)(unsafe.Pointer(&r.sqeMem[0])), r.sqSize)
	r.tail = r.sqTail.Load()

	cq := unsafe.Pointer(&r.cqMem[0])
	r.cqHead = (*atomic.Uint32)(unsafe.Add(cq, p.CQOffset.Head))
	r.cqTail = (*atomic.Uint32)(unsafe.Add(cq, p.CQOffset.Tail))
	r.cqOverflow = (*atomic.Uint32)(unsafe.Add(cq, p.CQOffset.Overflow))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.CQOffset.RingMask))
	n := *(*uint32)(unsafe.Add(cq, p.CQOffset.RingEntries))
	r.cqes = unsafe.Slice((*iosys.CompletionQueueEvent16)(unsafe.Add(cq, p.CQOffset.Cqes)), n)
	return nil
}

func (r *ring) unmap() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.cqMem != nil && len(r.sqMem) > 0 && &r.cqMem[0] != &r.sqMem[0] {
		unix.Munmap(r.cqMem)
	}
	r.cqMem = nil
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
		r.sqMem = nil
	}
}

// close releases the ring. The caller guarantees no request is in flight.
func (r *ring) close() error {
	r.unmap()
	return unix.Close(r.fd)
}

// getSlot takes a free slot, waiting if all are busy; done aborts the
// wait (File.Close).
func (r *ring) getSlot(done <-chan struct{}) (uint32, error) {
	select {
	case i := <-r.free:
		return i, nil
	default:
	}
	select {
	case i := <-r.free:
		return i, nil
	case <-done:
		return 0, block.ErrClosed
	}
}

func (r *ring) putSlot(i uint32) {
	s := &r.slots[i]
	// Drop buffer references so the slot does not pin caller memory.
	clear(s.iov[:cap(s.iov)])
	s.iov = s.iov[:0]
	if s.iov2 != nil {
		clear(s.iov2[:cap(s.iov2)])
		s.iov2 = s.iov2[:0]
	}
	s.noMerge = false
	r.free <- i
}

// sqe describes one SQE to queue.
type sqe struct {
	op     uint8
	flags  uint8
	fd     int32
	addr   uint64
	len    uint32
	off    uint64
	opFlag uint32
}

// queue writes the SQEs of slot idx (one, or two linked) and publishes
// them with one tail store. It never finds the SQ full: see newRing.
func (r *ring) queue(idx uint32, e []sqe) {
	r.waiting.Add(1)
	r.mu.Lock()
	t := r.tail
	for k := range e {
		q := &r.sqes[t&r.sqMask]
		q.Reset()
		q.PrepOperation(e[k].op, e[k].fd, e[k].addr, e[k].len, e[k].off)
		if e[k].opFlag != 0 {
			q.SetOpFlags(e[k].opFlag)
		}
		if e[k].flags != 0 {
			q.SetFlags(e[k].flags)
		}
		q.SetUserData(uint64(idx)*2 + uint64(k))
		t++
	}
	r.tail = t
	r.qTail.Store(t)
	// Release: the SQE bodies above must be visible before the kernel sees
	// the new tail (io_uring(7): "the application must ... write barrier
	// before updating the tail"). This also publishes staged SQEs (R8).
	r.pubGen.Add(1) // before the tail: the reaper must see it (split)
	r.sqTail.Store(t)
	r.mu.Unlock()
}

// queueRW queues the data SQE e of slot idx (n bytes at off, iovecs in
// the slot's iov). With merging on (R8) it rides on a staged SQE of the
// same kind that ends at off, or else is staged itself for later requests
// to ride on; the next enter publishes it.
func (r *ring) queueRW(idx uint32, e sqe, write bool, off, n int64) {
	s := &r.slots[idx]
	merge := r.merge && !s.noMerge
	r.waiting.Add(1)
	r.mu.Lock()
	if merge {
		pub := r.sqTail.Load() // stored only under mu
		for t, k := r.tail, 0; t != pub && k < mergeScan; k++ {
			t--
			hidx := r.sqOwner[t&r.sqMask]
			h := &r.slots[hidx]
			// The array must not grow (the kernel may read it) and the
			// merged SQE must stay within IOV_MAX: a slot whose array
			// grew for a long vector has a capacity past maxIov, and
			// the kernel answers EINVAL to more than IOV_MAX iovecs.
			if h.end != off || h.write != write || h.fd != e.fd ||
				len(h.iov)+len(s.iov) > min(cap(h.iov), maxIov) || h.end-h.off+n > mergeBytes {
				continue
			}
			s.own = n // split reads it
			h.iov = append(h.iov, s.iov...)
			h.end += n
			h.riders = append(h.riders, idx)
			h.nRiders.Store(int32(len(h.riders)))
			op := uint8(iosys.IORING_OP_READV)
			if write {
				op = iosys.IORING_OP_WRITEV
			}
			r.sqes[t&r.sqMask].PrepOperation(op, h.fd, iovAddr(h.iov), uint32(len(h.iov)), uint64(h.off))
			r.mu.Unlock()
			r.m.merged.Add(1)
			return
		}
	}
	t := r.tail
	q := &r.sqes[t&r.sqMask]
	q.Reset()
	q.PrepOperation(e.op, e.fd, e.addr, e.len, e.off)
	q.SetUserData(uint64(idx) * 2)
	r.sqOwner[t&r.sqMask] = idx
	s.write, s.fd, s.off, s.end, s.own, s.nOwn = write, e.fd, off, off+n, n, len(s.iov)
	s.riders = s.riders[:0]
	s.nRiders.Store(0)
	r.tail = t + 1
	r.qTail.Store(t + 1)
	if !merge {
		r.pubGen.Add(1)       // before the tail: the reaper must see it (split)
		r.sqTail.Store(t + 1) // publishes staged SQEs before it too
	}
	r.mu.Unlock()
}

// publish makes every staged SQE visible to the kernel (R8). Callers hold
// subMu and compute to_submit from the SQ tail afterwards.
func (r *ring) publish() {
	if r.qTail.Load() == r.sqTail.Load() {
		return
	}
	r.mu.Lock()
	r.pubGen.Add(1) // before the tail: the reaper must see it (split)
	r.sqTail.Store(r.tail)
	r.mu.Unlock()
}

// wait returns once slot idx has seen want CQEs. The caller becomes the
// leader when it can: the leader submits all queued SQEs and waits in one
// io_uring_enter, reaping for every slot.
func (r *ring) wait(idx uint32, want int) error {
	s := &r.slots[idx]
	got := 0
	for {
		if r.enterMu.TryLock() {
			err := r.lead(s, &got, want)
			r.enterMu.Unlock()
			r.waiting.Add(-1)
			// Hand leadership to a parked waiter if any request is still
			// outstanding; an extra token only costs a TryLock.
			if r.waiting.Load() > 0 {
				select {
				case r.leaderCh <- struct{}{}:
				default:
				}
			}
			return err
		}
		// The leader may be asleep in the kernel waiting for unrelated
		// completions. With several requests in the kernel one of them
		// completes soon and the leader submits ours in its next enter,
		// batched with others; with few, submit ourselves.
		if r.inKernel() < submitThreshold {
			r.submitPending()
		}
		for got < want {
			select {
			case <-s.ch:
				got++
				continue
			case <-r.leaderCh:
			}
			break
		}
		if got == want {
			r.waiting.Add(-1)
			return nil
		}
	}
}

// lead runs with enterMu held until slot s has want results.
func (r *ring) lead(s *slot, got *int, want int) error {
	for {
		for *got < want {
			select {
			case <-s.ch:
				*got++
				continue
			default:
			}
			break
		}
		if *got == want {
			return nil
		}
		if r.woke {
			// Let the waiters we woke run on this P (they sit in its run
			// queue) and queue their next requests before we block in the
			// kernel: otherwise they wait until sysmon retakes the P from
			// our syscall, and our enter batches nothing.
			r.woke = false
			runtime.Gosched()
		}
		// Submit and wait in one enter. toSubmit must be exact (R7): take
		// subMu to compute it, and tell submitters that head will reach
		// leaderEnd once the kernel has consumed our batch.
		r.subMu.Lock()
		r.publish()
		t := r.sqTail.Load()
		toSubmit := t - r.sqHead.Load()
		if toSubmit > 0 {
			r.leaderEnd.Store(t)
			r.leaderIn.Store(true)
		}
		r.subMu.Unlock()
		n, err := enter(r.fd, toSubmit, 1, iosys.IORING_ENTER_FLAGS_GETEVENTS)
		r.leaderIn.Store(false)
		r.m.enters.Add(1)
		if n > 0 {
			r.m.sqes.Add(uint64(n))
		}
		if err != nil && err != unix.EINTR && err != unix.EAGAIN && err != unix.EBUSY {
			// The ring is unusable; the slot stays owned by the kernel.
			return fmt.Errorf("uring: io_uring_enter: %w", err)
		}
		if r.reap(s, got) > 0 {
			r.woke = true
		}
	}
}

// inKernel is the number of SQEs the kernel consumed whose CQEs are not
// reaped yet: every SQE yields exactly one CQE, and both heads count from
// zero, so the difference of the two heads is exact.
func (r *ring) inKernel() int32 { return int32(r.sqHead.Load() - r.cqHead.Load()) }

// submitPending submits every queued SQE without waiting. If another
// goroutine is submitting, it leaves the work to it: the holder re-checks
// the SQ after unlocking, so nothing queued meanwhile is stranded (either
// our TryLock or its re-check sees the other's store).
func (r *ring) submitPending() {
	for r.qTail.Load() != r.sqHead.Load() {
		if !r.subMu.TryLock() {
			return
		}
		// A leader that released subMu but whose batch the kernel has not
		// consumed yet (head short of leaderEnd) still owns the SQ head:
		// an enter now would make its to_submit stale. It is microseconds
		// away.
		for r.leaderIn.Load() && int32(r.sqHead.Load()-r.leaderEnd.Load()) < 0 {
			runtime.Gosched()
		}
		r.publish()
		if toSubmit := r.sqTail.Load() - r.sqHead.Load(); toSubmit != 0 {
			n, err := enter(r.fd, toSubmit, 0, 0)
			r.m.enters.Add(1)
			if n > 0 {
				r.m.sqes.Add(uint64(n))
			}
			if err != nil && err != unix.EINTR {
				// EAGAIN/EBUSY: the leader's next enter retries.
				r.subMu.Unlock()
				return
			}
		}
		r.subMu.Unlock()
	}
}

// reap consumes every available CQE, counts own's in *ownGot, signals
// the other slots and returns how many it signalled. Called with enterMu held.
func (r *ring) reap(own *slot, ownGot *int) int {
	head := r.cqHead.Load()
	start := head
	// Acquire: CQE contents written before the kernel's tail store are
	// visible after this load (io_uring(7), "read barrier").
	tail := r.cqTail.Load()
	if head == tail {
		r.checkOverflow()
		return 0
	}
	others := 0
	for ; head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		ud := c.UserData()
		s := &r.slots[ud>>1]
		if ud&1 == 0 && s.nRiders.Load() > 0 {
			others += r.split(s, c.Result(), own, ownGot)
			continue
		}
		s.res[ud&1].Store(c.Result())
		if s == own {
			*ownGot++ // the leader's own result: no channel round trip
			continue
		}
		s.ch <- struct{}{} // cap 2 >= SQEs per slot: never blocks
		others++
	}
	// Release: we are done reading those CQEs; the kernel may reuse them.
	r.cqHead.Store(head)
	r.m.cqes.Add(uint64(head - start))
	r.checkOverflow()
	return others
}

// split hands the result of merged SQE of slot h to each request in it
// (R8): in order, each gets its own bytes of the transfer; a request the
// transfer did not reach gets -EAGAIN and resubmits; on an error or a
// zero result every request gets -EAGAIN and resubmits alone (noMerge),
// so each sees its own result. It returns how many slots other than own it signalled.
func (r *ring) split(h *slot, res int32, own *slot, ownGot *int) int {
	// Acquire what merging writers did to h under mu while it was
	// staged: the publish of h's SQE (under mu, after them) happened
	// before its completion. The kernel orders this in fact; loading
	// pubGen (bumped at every publish, in Go memory) makes it an edge of
	// the Go memory model and of the race detector, since the reaper may
	// never have taken mu.
	_ = r.pubGen.Load()
	n := int(h.nRiders.Load())
	if r.testSplit != nil {
		res = r.testSplit(res)
	}
	if res <= 0 {
		r.m.mergeSplits.Add(1)
	}
	rem := int64(res)
	for i := -1; i < n; i++ {
		m := h
		if i >= 0 {
			m = &r.slots[h.riders[i]]
		}
		var v int32
		switch {
		case res <= 0:
			// An error, or nothing moved: we cannot tell whose part
			// caused it, so each request retries alone for its own
			// result.
			v = -int32(unix.EAGAIN)
			m.noMerge = true
		case rem == 0 && i >= 0:
			v = -int32(unix.EAGAIN)
		default:
			v = int32(min(rem, m.own))
			rem -= int64(v)
		}
		m.res[0].Store(v)
	}
	// The head's owner may resubmit its own SQE: drop the riders' iovecs
	// (and their buffer pointers) from its array. All of this happens
	// before the head's owner is signalled (it may free the slot at once).
	clear(h.iov[h.nOwn:])
	h.iov = h.iov[:h.nOwn]
	h.end = h.off + h.own
	others := 0
	for _, ri := range h.riders {
		if m := &r.slots[ri]; m == own {
			*ownGot++
		} else {
			m.ch <- struct{}{}
			others++
		}
	}
	h.riders = h.riders[:0]
	h.nRiders.Store(0)
	if h == own {
		*ownGot++
	} else {
		h.ch <- struct{}{}
		others++
	}
	return others
}

func (r *ring) checkOverflow() {
	if o := r.cqOverflow.Load(); o != r.lastOverflow {
		r.m.cqOverflows.Add(uint64(o - r.lastOverflow))
		r.lastOverflow = o
	}
	if r.sqFlags.Load()&iosys.IORING_SQ_CQ_OVERFLOW != 0 {
		// NODROP kernels keep overflowed CQEs in a list; the next
		// GETEVENTS enter flushes them into the CQ.
		r.m.cqOverflows.Add(1)
	}
}

// enter is io_uring_enter without the allocating error wrapping of the
// iceber helper (errors there would allocate on EINTR).
func enter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	n, _, errno := unix.Syscall6(iosys.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit),
		uintptr(minComplete), uintptr(flags), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// setIov fills dst from bufs, storing real pointers so the buffers escape
// to the heap and are not moved by stack growth while the kernel uses them.
func setIov(dst []unix.Iovec, bufs [][]byte) []unix.Iovec {
	dst = dst[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		var v unix.Iovec
		v.Base = unsafe.SliceData(b)
		v.SetLen(len(b))
		dst = append(dst, v)
	}
	return dst
}

func iovAddr(v []unix.Iovec) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(v)))) }

// rw runs one readv/writev (or read/write for one buffer) of bufs at off
// and returns the kernel's result (bytes, or -errno). len(bufs) <= maxIov.
func (r *ring) rw(write bool, fd int, off int64, bufs [][]byte, done <-chan struct{}) (int32, error) {
	idx, err := r.getSlot(done)
	if err != nil {
		return 0, err
	}
	s := &r.slots[idx]
	s.iov = setIov(s.iov, bufs)
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	e := r.rwSQE(write, fd, off, s.iov)
	for {
		r.queueRW(idx, e, write, off, n)
		if r.testQueued != nil {
			r.testQueued()
		}
		if err := r.wait(idx, 1); err != nil {
			return 0, err
		}
		res := s.res[0].Load()
		if res == -int32(unix.EAGAIN) || res == -int32(unix.EINTR) {
			r.m.eagain.Add(1)
			continue
		}
		runtime.KeepAlive(bufs)
		r.putSlot(idx)
		return res, nil
	}
}

func (r *ring) rwSQE(write bool, fd int, off int64, iov []unix.Iovec) sqe {
	e := sqe{fd: int32(fd), off: uint64(off)}
	if len(iov) == 1 && iov[0].Len <= maxRW && probeOps().has(iosys.IORING_OP_READ) {
		// IORING_OP_READ/WRITE take a u32 length; bigger goes as a vector.
		e.addr = uint64(uintptr(unsafe.Pointer(iov[0].Base)))
		e.len = uint32(iov[0].Len)
		e.op = iosys.IORING_OP_READ
		if write {
			e.op = iosys.IORING_OP_WRITE
		}
		return e
	}
	e.addr = iovAddr(iov)
	e.len = uint32(len(iov))
	e.op = iosys.IORING_OP_READV
	if write {
		e.op = iosys.IORING_OP_WRITEV
	}
	return e
}

func fallocSQE(fd int, mode uint32, off, n int64) sqe {
	// IORING_OP_FALLOCATE: len goes in addr, mode in len.
	return sqe{op: iosys.IORING_OP_FALLOCATE, fd: int32(fd), addr: uint64(n), len: mode, off: uint64(off)}
}

// simple runs one non-data SQE (fallocate, fsync) and returns its result.
func (r *ring) simple(e sqe, done <-chan struct{}) (int32, error) {
	idx, err := r.getSlot(done)
	if err != nil {
		return 0, err
	}
	s := &r.slots[idx]
	var es [1]sqe
	es[0] = e
	for {
		r.queue(idx, es[:])
		if err := r.wait(idx, 1); err != nil {
			return 0, err
		}
		res := s.res[0].Load()
		if res == -int32(unix.EAGAIN) || res == -int32(unix.EINTR) {
			r.m.eagain.Add(1)
			continue
		}
		r.putSlot(idx)
		return res, nil
	}
}

// linked submits fallocate(mode, zoff, zn) linked (IOSQE_IO_LINK) before a
// write of bufs at woff, in one submission; the kernel starts the write only
// after the fallocate succeeded and cancels it (-ECANCELED) otherwise.
// It returns both results; the write result is retried here on EAGAIN.
func (r *ring) linked(fd int, mode uint32, zoff, zn int64, woff int64, bufs [][]byte, done <-chan struct{}) (zres, wres int32, err error) {
	idx, err := r.getSlot(done)
	if err != nil {
		return 0, 0, err
	}
	s := &r.slots[idx]
	s.iov2 = setIov(s.iov2, bufs)
	var e [2]sqe
	e[0] = fallocSQE(fd, mode, zoff, zn)
	e[0].flags = iosys.IOSQE_FLAGS_IO_LINK
	e[1] = r.rwSQE(true, fd, woff, s.iov2)
	if err := r.waitChain(idx, e[:]); err != nil {
		return 0, 0, err
	}
	zres, wres = s.res[0].Load(), s.res[1].Load()
	if zres == -int32(unix.EAGAIN) || zres == -int32(unix.EINTR) {
		// Retry the whole chain: the write was cancelled.
		r.m.eagain.Add(1)
		if err := r.waitChain(idx, e[:]); err != nil {
			return 0, 0, err
		}
		zres, wres = s.res[0].Load(), s.res[1].Load()
	}
	for zres >= 0 && (wres == -int32(unix.EAGAIN) || wres == -int32(unix.EINTR)) {
		r.m.eagain.Add(1)
		e[1].flags = 0
		// Resubmit the write alone as the slot's second SQE so its CQE
		// still lands in res[1].
		r.queueAt(idx, 1, e[1])
		if err := r.wait(idx, 1); err != nil {
			return 0, 0, err
		}
		wres = s.res[1].Load()
	}
	runtime.KeepAlive(bufs)
	r.putSlot(idx)
	return zres, wres, nil
}

func (r *ring) waitChain(idx uint32, e []sqe) error {
	r.queue(idx, e)
	return r.wait(idx, len(e))
}

// queueAt queues a single SQE with user_data idx*2+k.
func (r *ring) queueAt(idx uint32, k uint64, e sqe) {
	r.waiting.Add(1)
	r.mu.Lock()
	t := r.tail
	q := &r.sqes[t&r.sqMask]
	q.Reset()
	q.PrepOperation(e.op, e.fd, e.addr, e.len, e.off)
	if e.opFlag != 0 {
		q.SetOpFlags(e.opFlag)
	}
	q.SetUserData(uint64(idx)*2 + k)
	r.tail = t + 1
	r.qTail.Store(t + 1)
	r.pubGen.Add(1) // before the tail: the reaper must see it (split)
	r.sqTail.Store(t + 1)
	r.mu.Unlock()
}
