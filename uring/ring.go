//go:build linux

package uring

import (
	"sync"
	"sync/atomic"

	iosys "github.com/iceber/iouring-go/syscall"
	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/invariants"
	"golang.org/x/sys/unix"
)

// ring is one io_uring instance with a preallocated request-slot table.
// Many goroutines submit concurrently; whichever waiter holds enterMu (the
// leader) submits everything queued and reaps for everybody (R2, R3 in
// doc.go).
type ring struct {
	fd   int
	feat ringFeat // optional features the kernel accepted (R9)

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
	// sqFixed says which SQ entries were filled as READ/WRITE_FIXED;
	// they are counted when published (Metrics.Fixed). Guarded by mu.
	sqFixed []bool

	enterMu  sync.Mutex    // held by the leader: the only reaper
	leaderCh chan struct{} // cap 1: "somebody please lead" token
	waiting  atomic.Int32  // requests whose owners have not seen all results
	// slow counts the standalone non-data SQEs (fsync, fallocate) from
	// queueing until their owner has the result: they may take long in
	// the kernel (an fdatasync of much dirty data: a second), so no
	// completion of theirs is "soon" (R2, wait). A linked chain's
	// fallocate zeroes one cluster ahead of its write and is not counted.
	slow atomic.Int32
	// asleep: the leader is in its submit+wait enter, or about to be
	// (raised before it computes to_submit, lowered when the enter
	// returns). A waiter that sees it submits its own SQE (R2, wait).
	asleep atomic.Bool

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
	// Drop buffer references so the slot does not pin caller memory
	// (R5). Entries past len are zero already: setIov fills from the
	// start of a cleared array and split clears the riders' entries
	// before it shortens a head's array, so clearing the used part is
	// enough (clearing the whole 64-entry array cost 2.6 % of the CPU of
	// 4 KiB overwrites).
	if invariants.Enabled {
		checkIovTail(s.iov)
		checkIovTail(s.iov2)
	}
	clear(s.iov)
	s.iov = s.iov[:0]
	if s.iov2 != nil {
		clear(s.iov2)
		s.iov2 = s.iov2[:0]
	}
	s.noMerge = false
	r.free <- i
}

// checkIovTail panics if an iovec array holds a buffer address past its
// length, where putSlot no longer clears (R5).
func checkIovTail(v []unix.Iovec) {
	for _, e := range v[len(v):cap(v)] {
		if e.Base != nil {
			panic("uring: R5: a slot's iovec array holds a buffer address past its length")
		}
	}
}
