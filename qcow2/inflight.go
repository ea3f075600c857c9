package qcow2

import (
	"sync"
	"sync/atomic"

	"github.com/qring/qring/qcow2/format"
)

// This file is the one place that decides when a write into a cluster
// under allocation may go to the device and when it is acknowledged
// (Q10). Its rules:
//
//   - An early writer may write once the allocation is ready (the bytes
//     of the new host cluster outside the allocator's own data are
//     final: copied, zeroed, or a fresh hole) and not yet sealed.
//   - The allocator seals before it links: no early writer enters after
//     that, and the seal waits for those in flight. So no early write
//     reaches the host cluster after the link, where a discard could
//     free it (bug 4: TestRegress_EarlyWriteSealed).
//   - An early writer is acknowledged only after the allocation is
//     finished: linked, so every later read sees its bytes (bug 2:
//     TestRegress_EarlyWriteVisible), or failed, and then it returns
//     the link error (bug 3: TestRegress_EarlyWriteLinkError).
//   - If the allocator's own write fails, the cluster is still linked
//     when an early write succeeded; otherwise the allocation is undone.

// allocState is a cluster allocation in flight: the state its owner
// attaches to the cluster's sched.ClusterLocks registration (sched S7),
// so a writer that finds the cluster busy learns from the registration
// itself whether it may write early.
type allocState struct {
	host  format.HostOff // the new host cluster
	ready atomic.Bool
	done  chan struct{} // closed when the allocation is finished
	err   error         // why it failed; set before done is closed

	mu     sync.Mutex
	idle   sync.Cond
	sealed bool // no more early writers
	active int  // early writers in flight
	ok     int  // early writes that succeeded
}

func newAllocState(host format.HostOff) *allocState {
	st := &allocState{host: host, done: make(chan struct{})}
	st.idle.L = &st.mu
	return st
}

// enter registers an early writer; false once the allocation is sealed.
func (st *allocState) enter() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sealed {
		return false
	}
	st.active++
	return true
}

func (st *allocState) exit(ok bool) {
	st.mu.Lock()
	st.active--
	if ok {
		st.ok++
	}
	if st.active == 0 {
		st.idle.Broadcast()
	}
	st.mu.Unlock()
}

// seal stops new early writers, waits for those in flight and returns
// how many succeeded: if none, a failed allocation may still be undone.
func (st *allocState) seal() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.sealed = true
	for st.active > 0 {
		st.idle.Wait()
	}
	return st.ok
}

// finish records the outcome (nil: linked) and releases the early
// writers waiting for it.
func (st *allocState) finish(err error) {
	st.err = err
	close(st.done)
}

// acceptsEarly reports whether early writes may go to the host cluster
// now: the allocation is ready and its outcome not yet known. A nil
// state (the owner has not attached one yet, or the registration is not
// an allocating write's) accepts none: the caller waits for the
// registration to go.
func (st *allocState) acceptsEarly() bool {
	return st != nil && st.ready.Load() && !st.finished()
}

// finished reports whether the allocation's outcome is known (its
// registration is about to be released: early writers wait for that
// instead of spinning on the sealed state).
func (st *allocState) finished() bool {
	select {
	case <-st.done:
		return true
	default:
		return false
	}
}

// earlyWrite writes into a cluster whose allocation is in flight but
// whose COW or zeroing is complete (Q10). done is false when the
// allocation was sealed first and the caller must look again (once it
// is finished).
func (im *Image) earlyWrite(st *allocState, goff format.GuestOff, v [][]byte) (done bool, err error) {
	if !st.enter() {
		<-st.done
		return false, nil
	}
	im.c.earlyWrites.Add(1)
	err = im.writeHost(im.g.HostFor(st.host, goff), goff, v)
	st.exit(err == nil)
	im.event(EvEarlyWrite)
	<-st.done // acknowledged once linked (or with the link's error)
	if err != nil {
		return true, err
	}
	return true, st.err
}
