package qcow2

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// dataGate orders lock-free data I/O into allocated clusters before the
// freeing of those clusters (Q12). A writer on the overwrite path, or a
// reader, finds its host cluster without Image.mu; if a discard frees
// that cluster and another allocation reuses it while the I/O is in
// flight, a write lands in someone else's data and a read returns it.
// So both enter the gate before they look up the L2 entry and leave it
// when their I/O is done, and whoever frees a data cluster that such a
// request may have found first changes the entry, then waits (sync) for
// every request that entered before, then drops the refcount. A request
// that enters after the sync began sees the new entry.
//
// A freer that must not wait (it holds mu, or it may run on a queue's
// owner, whose own requests hold tokens until it reaps them: block A3)
// takes a ticket after changing the entry and gives the cluster out
// only once passed(ticket) holds; poll moves the gate on without
// waiting.
//
// It is an epoch scheme with two counters (64-bit epochs never wrap): entering costs two atomic
// loads and one add, nothing is allocated, and only the rare freer
// waits. Requests of at most two epochs are ever in the gate, the
// current one and the one before: the epoch moves on only once the one
// before it has drained, since both share a counter.
type dataGate struct {
	epoch atomic.Uint64
	_     [60]byte // keep the counters off the epoch's cache line
	n     [2]atomic.Int64
	// drained: every request that entered in an epoch before it has
	// left. Written under syncMu.
	drained atomic.Uint64
	syncMu  sync.Mutex
}

// enter registers a request and returns the token for exit.
func (g *dataGate) enter() uint64 {
	for {
		e := g.epoch.Load()
		g.n[e&1].Add(1)
		if g.epoch.Load() == e {
			return e
		}
		// The epoch moved in between: register in the new one, so no
		// freer ever waits for a request that looks up later.
		g.n[e&1].Add(-1)
	}
}

func (g *dataGate) exit(e uint64) { g.n[e&1].Add(-1) }

// sync returns once every request that entered before the call has
// left. Callers must not hold anything a request in the gate may wait
// for.
func (g *dataGate) sync() { g.syncWithin(0) }

// syncWithin is sync giving up after d (0: never), false then: the
// epoch it moved on from may still hold requests, as after a poll, and
// the next sync waits for them first.
func (g *dataGate) syncWithin(d time.Duration) bool {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	var deadline time.Time
	if d > 0 {
		deadline = time.Now().Add(d)
	}
	e := g.epoch.Load()
	if !g.waitZero(&g.n[(e+1)&1], deadline) { // the epoch before e, left by poll
		return false
	}
	g.drained.Store(e)
	g.epoch.Store(e + 1)
	if !g.waitZero(&g.n[e&1], deadline) {
		return false
	}
	g.drained.Store(e + 1)
	return true
}

// waitZero waits for *n to reach 0, until deadline unless it is zero.
func (g *dataGate) waitZero(n *atomic.Int64, deadline time.Time) bool {
	for spins := 0; n.Load() != 0; spins++ {
		if spins < 64 {
			runtime.Gosched()
			continue
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Microsecond)
	}
	return true
}

// ticket is taken by a freer after it changed the entries it frees: the
// clusters may be given out once passed(ticket).
func (g *dataGate) ticket() uint64 { return g.epoch.Load() }

// passed reports whether every request that may have found an entry
// changed before ticket t was taken has left the gate.
func (g *dataGate) passed(t uint64) bool { return g.drained.Load() > t }

// poll moves the gate on as far as it can without waiting, so that
// tickets up to the current epoch pass once their requests leave: it
// never blocks (a sync in progress makes it a no-op).
func (g *dataGate) poll() {
	if !g.syncMu.TryLock() {
		return
	}
	defer g.syncMu.Unlock()
	// Twice: the first turn may find e's requests already gone, and
	// then the second counts e drained too.
	for range 2 {
		e := g.epoch.Load()
		if g.n[(e+1)&1].Load() != 0 { // the epoch before e is still in
			return
		}
		g.drained.Store(e)
		// A request that loaded e and registers after this store sees
		// the new epoch and retries in it, so e's counter only falls.
		g.epoch.Store(e + 1)
	}
}
