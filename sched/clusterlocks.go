package sched

import (
	"errors"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

const (
	// groupShift: clusters are grouped 2^groupShift at a time (1 MiB of
	// 64 KiB clusters) and each group maps to one shard, so a sequential
	// writer and its neighbours usually share one shard lock while
	// unrelated regions of the image do not contend.
	groupShift = 4
	numShards  = 64 // must be 64: a shard set is a uint64 mask
)

// Alloc is an in-flight allocation of a cluster range, or a wait handle on
// one. It is pooled: the owner must not use it after Release, and a waiter
// must not use a blocker after Wait or Forget.
//
// It carries the owner's state of the allocation (S7): the one record a
// writer that finds the cluster busy consults, so that no second map of
// allocations in flight is needed.
type Alloc[S any] struct {
	first, end uint64 // clusters [first, end)
	shards     uint64 // mask of shards this allocation is registered in
	cl         *ClusterLocks[S]
	state      atomic.Pointer[S] // the owner's state; nil until SetState

	// mu guards released and pins. A blocker handed to a caller holds a
	// pin; the Alloc is recycled only once it is released and unpinned, so
	// Wait never observes a later incarnation (S5).
	mu       sync.Mutex
	cond     sync.Cond // L = &mu
	released bool
	pins     int32
}

type shard[S any] struct {
	mu     sync.Mutex
	allocs []*Alloc[S]
	_      [64 - 8 - 24]byte // keep shards on separate cache lines
}

// ClusterLocks records in-flight cluster allocations, like QEMU's
// s->cluster_allocs with handle_dependencies: a write touching a cluster
// whose allocation is in flight waits for that allocation only (S1), or
// acts on the state its owner attached (S7). S is the type of that state;
// ClusterLocks never looks inside it. The zero value is ready to use; it
// is safe for concurrent use.
type ClusterLocks[S any] struct {
	shards [numShards]shard[S]
	// inFlight lets Conflict answer "nothing anywhere" without a lock.
	inFlight atomic.Int64
	pool     sync.Pool

	acquisitions, conflicts, waits, checks atomic.Int64
	peak                                   atomic.Int64
}

// ClusterMetrics is a snapshot of a ClusterLocks' counters.
type ClusterMetrics struct {
	// Acquisitions counts successful TryAcquire calls.
	Acquisitions int64
	// Conflicts counts TryAcquire calls that found an in-flight
	// allocation, plus Conflict calls that returned a blocker.
	Conflicts int64
	// Waits counts Wait calls that actually slept.
	Waits int64
	// Checks counts Conflict calls.
	Checks int64
	// InFlight is the number of allocations registered now; PeakInFlight
	// the most seen at once.
	InFlight, PeakInFlight int64
}

// Sub returns m minus o for the counters (InFlight and PeakInFlight are
// taken from m).
func (m ClusterMetrics) Sub(o ClusterMetrics) ClusterMetrics {
	return ClusterMetrics{
		Acquisitions: m.Acquisitions - o.Acquisitions,
		Conflicts:    m.Conflicts - o.Conflicts,
		Waits:        m.Waits - o.Waits,
		Checks:       m.Checks - o.Checks,
		InFlight:     m.InFlight,
		PeakInFlight: m.PeakInFlight,
	}
}

func (m ClusterMetrics) String() string {
	return fmt.Sprintf("acquisitions %d  conflicts %d  waits %d  checks %d  in-flight %d (peak %d)",
		m.Acquisitions, m.Conflicts, m.Waits, m.Checks, m.InFlight, m.PeakInFlight)
}

// Metrics returns a snapshot of the counters.
func (c *ClusterLocks[S]) Metrics() ClusterMetrics {
	return ClusterMetrics{
		Acquisitions: c.acquisitions.Load(),
		Conflicts:    c.conflicts.Load(),
		Waits:        c.waits.Load(),
		Checks:       c.checks.Load(),
		InFlight:     c.inFlight.Load(),
		PeakInFlight: c.peak.Load(),
	}
}

// shardMask returns the set of shards covering clusters [first, end).
func shardMask(first, end uint64) uint64 {
	g0, g1 := first>>groupShift, (end-1)>>groupShift
	if g1-g0 >= numShards-1 {
		return ^uint64(0)
	}
	var m uint64
	for g := g0; ; g++ {
		m |= 1 << (g % numShards)
		if g == g1 {
			return m
		}
	}
}

func (c *ClusterLocks[S]) lock(mask uint64) {
	// Ascending shard order everywhere, so multi-shard holders never
	// deadlock with each other.
	for m := mask; m != 0; m &= m - 1 {
		c.shards[bits.TrailingZeros64(m)].mu.Lock()
	}
}

func (c *ClusterLocks[S]) unlock(mask uint64) {
	for m := mask; m != 0; m &= m - 1 {
		c.shards[bits.TrailingZeros64(m)].mu.Unlock()
	}
}

// find returns the registered allocation overlapping [first, end) whose
// overlap starts lowest, and where. Called with the shards of mask locked.
func (c *ClusterLocks[S]) find(mask, first, end uint64) (*Alloc[S], uint64) {
	var best *Alloc[S]
	var at uint64
	for m := mask; m != 0; m &= m - 1 {
		for _, a := range c.shards[bits.TrailingZeros64(m)].allocs {
			if a.first < end && first < a.end {
				s := max(a.first, first)
				if best == nil || s < at {
					best, at = a, s
				}
			}
		}
	}
	return best, at
}

// pin takes a waiter's reference on a registered allocation. Called with a
// shard of a locked, which keeps a from being released meanwhile.
func (a *Alloc[S]) pin() {
	a.mu.Lock()
	a.pins++
	a.mu.Unlock()
}

// TryAcquire registers an in-flight allocation for clusters
// [first, first+count) if none of them has one (S1). Otherwise it registers
// nothing and returns the first conflicting cluster index and a blocker to
// Wait on; the caller must call blocker.Wait or blocker.Forget exactly once,
// then look the clusters up again (the blocker has typically linked them).
// count 0 is treated as 1.
func (c *ClusterLocks[S]) TryAcquire(first, count uint64) (a *Alloc[S], conflict uint64, blocker *Alloc[S]) {
	end := clusterEnd(first, count)
	mask := shardMask(first, end)
	c.lock(mask)
	if b, at := c.find(mask, first, end); b != nil {
		b.pin()
		c.unlock(mask)
		c.conflicts.Add(1)
		return nil, at, b
	}
	a = c.get()
	a.first, a.end, a.shards = first, end, mask
	for m := mask; m != 0; m &= m - 1 {
		s := &c.shards[bits.TrailingZeros64(m)]
		s.allocs = append(s.allocs, a)
	}
	n := c.inFlight.Add(1)
	c.unlock(mask)
	c.acquisitions.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	return a, 0, nil
}

// Conflict returns the in-flight allocation overlapping clusters
// [first, first+count) that starts lowest in the range, and that cluster,
// or nil. It takes no lock when no allocation is in flight anywhere. A
// non-nil blocker must be passed to Wait or Forget exactly once. The answer
// is advisory: only TryAcquire decides atomically.
func (c *ClusterLocks[S]) Conflict(first, count uint64) (blocker *Alloc[S], at uint64) {
	c.checks.Add(1)
	if c.inFlight.Load() == 0 {
		return nil, 0
	}
	end := clusterEnd(first, count)
	mask := shardMask(first, end)
	c.lock(mask)
	b, at := c.find(mask, first, end)
	if b != nil {
		b.pin()
	}
	c.unlock(mask)
	if b != nil {
		c.conflicts.Add(1)
	}
	return b, at
}

// Release unregisters a, owned by the caller, and wakes every waiter. a must
// not be used afterwards.
func (c *ClusterLocks[S]) Release(a *Alloc[S]) {
	c.lock(a.shards)
	for m := a.shards; m != 0; m &= m - 1 {
		s := &c.shards[bits.TrailingZeros64(m)]
		for i, x := range s.allocs {
			if x == a {
				last := len(s.allocs) - 1
				s.allocs[i] = s.allocs[last]
				s.allocs[last] = nil
				s.allocs = s.allocs[:last]
				break
			}
		}
	}
	c.inFlight.Add(-1)
	c.unlock(a.shards)
	// No shard lists a now, so no new pins can appear.
	a.mu.Lock()
	a.released = true
	recycle := a.pins == 0
	if !recycle {
		a.cond.Broadcast()
	}
	a.mu.Unlock()
	if recycle {
		c.recycle(a)
	}
}

// Wait blocks until the allocation a blocker refers to is released, then
// drops the caller's reference. Call it once per blocker.
func (a *Alloc[S]) Wait() {
	a.mu.Lock()
	if a.pins <= 0 {
		a.mu.Unlock()
		panic(errNoPin)
	}
	if !a.released {
		a.cl.waits.Add(1)
		for !a.released {
			a.cond.Wait()
		}
	}
	a.unpinLocked()
}

// Forget drops the reference a blocker holds without waiting.
func (a *Alloc[S]) Forget() {
	a.mu.Lock()
	a.unpinLocked()
}

// unpinLocked drops one pin and unlocks a.mu; the last pin of a released
// allocation recycles it.
func (a *Alloc[S]) unpinLocked() {
	if a.pins <= 0 {
		a.mu.Unlock()
		panic(errNoPin)
	}
	a.pins--
	recycle := a.released && a.pins == 0
	a.mu.Unlock()
	if recycle {
		a.cl.recycle(a)
	}
}

// recycle returns a released, unpinned allocation to the pool, without
// its owner's state (S5).
func (c *ClusterLocks[S]) recycle(a *Alloc[S]) {
	a.state.Store(nil)
	c.pool.Put(a)
}

// SetState attaches the owner's state of the allocation (S7). Only the
// owner calls it, between TryAcquire and Release; a waiter that looks at
// the allocation afterwards through a blocker sees it.
func (a *Alloc[S]) SetState(st *S) { a.state.Store(st) }

// State returns the state the owner attached, or nil if it has attached
// none (yet). A waiter calls it on a blocker it holds (before Wait or
// Forget); the state stays the owner's to interpret.
func (a *Alloc[S]) State() *S { return a.state.Load() }

// First and Count describe the allocation's cluster range.
func (a *Alloc[S]) First() uint64 { return a.first }

// Count is the number of clusters in the allocation.
func (a *Alloc[S]) Count() uint64 { return a.end - a.first }

var errNoPin = errors.New("sched: Wait or Forget on an Alloc without a blocker reference")

func (c *ClusterLocks[S]) get() *Alloc[S] {
	if v := c.pool.Get(); v != nil {
		a := v.(*Alloc[S])
		a.released = false // pins is already 0: only unpinned Allocs are pooled
		return a
	}
	a := &Alloc[S]{cl: c}
	a.cond.L = &a.mu
	return a
}

func clusterEnd(first, count uint64) uint64 {
	if count == 0 {
		count = 1
	}
	end := first + count
	if end < first {
		end = ^uint64(0) // clamp: the last cluster index is unusable anyway
	}
	return end
}
