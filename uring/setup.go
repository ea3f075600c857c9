//go:build linux

package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// Ring setup: io_uring_setup, the three mmaps of the shared memory and
// the preallocated slot table (the layout diagram in doc.go). Which
// opcodes the kernel has is probe.go's.

// newRing sets up a ring for nslots concurrent requests.
func newRing(nslots int, m *counters) (*ring, error) {
	var p iosys.IOURingParams
	// Each slot may hold two SQEs (a linked chain), so size the SQ at
	// 2*nslots: unsubmitted SQEs can then never exceed the SQ, and with the
	// kernel's default CQ of 2*SQ the CQ cannot overflow either.
	// Optional setup flags first (R9); a kernel that does not know them
	// answers EINVAL, and the ring is set up without.
	p.Flags = setupFlags()
	fd, err := iosys.IOURingSetup(uint(2*nslots), &p)
	if err != nil && p.Flags != 0 {
		p = iosys.IOURingParams{}
		fd, err = iosys.IOURingSetup(uint(2*nslots), &p)
	}
	if err != nil {
		return nil, err
	}
	r := &ring{fd: fd, m: m}
	r.feat.coop = p.Flags&iosys.IORING_SETUP_COOP_TASKRUN != 0
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
	r.sqFixed = make([]bool, r.sqSize)
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
	uerr := r.unregister()
	r.unmap()
	return errors.Join(uerr, unix.Close(r.fd))
}
