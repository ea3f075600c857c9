package qcow2

import (
	"sync"
	"sync/atomic"
)

// allocState is a cluster allocation in flight (alongside its
// sched.ClusterLocks registration). Once ready, the new host cluster's
// bytes outside the allocator's own data are final (copied, zeroed, or a
// fresh hole), so other writers may write into it before the L2 link
// (Q10, the seed's goal 3).
type allocState struct {
	host  uint64
	ready atomic.Bool
	done  chan struct{} // closed after the link (or abort)

	mu     sync.Mutex
	idle   sync.Cond
	sealed bool // no more early writers
	active int  // early writers in flight
	ok     int  // early writes that succeeded
}

func newAllocState(host uint64) *allocState {
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

type inflightMap struct {
	mu sync.Mutex
	m  map[uint64]*allocState // guest cluster -> state
}

func (f *inflightMap) add(gc uint64, st *allocState) {
	f.mu.Lock()
	if f.m == nil {
		f.m = make(map[uint64]*allocState)
	}
	f.m[gc] = st
	f.mu.Unlock()
}

func (f *inflightMap) remove(gc uint64, st *allocState) {
	f.mu.Lock()
	if f.m[gc] == st {
		delete(f.m, gc)
	}
	f.mu.Unlock()
	close(st.done)
}

// ready returns the in-flight allocation of gc if early writes may go to
// its host cluster.
func (f *inflightMap) ready(gc uint64) *allocState {
	f.mu.Lock()
	st := f.m[gc]
	f.mu.Unlock()
	if st != nil && st.ready.Load() {
		return st
	}
	return nil
}

// wait blocks until every ready allocation in flight now has been linked,
// so that a Flush covers early writes that completed before it (Q10).
func (f *inflightMap) wait() {
	f.mu.Lock()
	var pending []chan struct{}
	for _, st := range f.m {
		if st.ready.Load() {
			pending = append(pending, st.done)
		}
	}
	f.mu.Unlock()
	for _, ch := range pending {
		<-ch
	}
}
