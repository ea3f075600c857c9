//go:build linux

package uring

import (
	"runtime"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// The submission side of the ring: filling and publishing SQEs (R1),
// and submit-only enters whose to_submit is exact (R7). Waiting and
// reaping are lead.go's; staging and merging of data SQEs merge.go's.

// queue fills the SQEs of slot idx (one, or two linked) with user_data
// idx*2+k+first and publishes them with one tail store. It never finds
// the SQ full: see newRing (R4). first is 1 when a linked chain's second
// SQE is resubmitted alone, so its CQE still lands in res[1].
func (r *ring) queue(idx uint32, first uint64, e []sqe) {
	r.waiting.Add(1)
	r.mu.Lock()
	t := r.tail
	for k := range e {
		r.fill(t, e[k], uint64(idx)*2+first+uint64(k))
		t++
	}
	r.setTail(t, true)
	r.mu.Unlock()
}

// setTail records t as the end of the SQEs filled so far (staged ones
// too, R8) and, with pub, publishes them all. The caller holds mu.
func (r *ring) setTail(t uint32, pub bool) {
	r.tail = t
	r.qTail.Store(t)
	if pub {
		r.publishLocked()
	}
}

// publishLocked stores the SQ tail; the caller holds mu. Release: the SQE
// bodies must be visible before the kernel sees the new tail (io_uring(7):
// "the application must ... write barrier before updating the tail").
// This also publishes staged SQEs (R8).
func (r *ring) publishLocked() {
	r.pubGen.Add(1) // before the tail: the reaper must see it (split)
	r.countFixed(r.sqTail.Load(), r.tail)
	r.sqTail.Store(r.tail)
}

// publish makes every staged SQE visible to the kernel (R8). Callers hold
// subMu and compute to_submit from the SQ tail afterwards.
func (r *ring) publish() {
	if r.qTail.Load() == r.sqTail.Load() {
		return
	}
	r.mu.Lock()
	r.publishLocked()
	r.mu.Unlock()
}

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
