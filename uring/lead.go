//go:build linux

package uring

import (
	"fmt"
	"runtime"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// The completion side of the ring: waiting for a slot's CQEs, and the
// leader that submits and waits in one enter and reaps for everybody
// (R2, R3). A merged SQE's result is split in merge.go.

// When a waiter that is not the leader submits its own SQE (R2), rather
// than leave it to the leader's next enter, which only a completion
// brings:
//
//   - while fewer than submitThreshold data SQEs are in the kernel (1:
//     none; standalone fsyncs and fallocates are not counted: one may
//     take a second). Measured on a 2-vCPU VM, O_DIRECT 4 KiB writes at
//     QD64: always submitting gives ~1 SQE per enter; 8 gave 10-20
//     before merging (R8). With merging one SQE may carry dozens of
//     requests, and 8 made waiters submit merged SQEs one at a time
//     (2.5x the enters, seed run 3.4 s); 1 gives 2.1 s there, and
//     random 4 KiB writes (no merges) measured the same with 1 or 8.
//   - while at most shallow requests are outstanding (ring.waiting, its
//     own included) and the leader is asleep in the kernel: at low
//     depth the completion the leader waits for may be a whole slow
//     request away, and a request that arrived meanwhile waited for it
//     (TestFile_NotBehindSlowRequest). Deeper, the first of the others
//     to complete brings the leader's enter, and submitting whenever
//     the leader sleeps measured up to 4x the enters at QD64 in a quiet
//     run (O_DIRECT 4 KiB writes on a virtio disk: 0.05 enters a
//     request, 0.2 with it); on a loaded 2-vCPU VM the two were within
//     noise of each other.
const (
	submitThreshold = 1
	shallow         = 4
)

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
		// See submitThreshold and shallow. Our SQE is queued (qTail)
		// before we load asleep, and the leader raises asleep before it
		// publishes and computes to_submit: either its enter carries our
		// SQE or we see asleep and submit it.
		if r.inKernel()-r.slow.Load() < submitThreshold ||
			(r.waiting.Load() <= shallow && r.asleep.Load()) {
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
		r.asleep.Store(true) // before publish: see wait
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
		r.asleep.Store(false)
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
