package qcow2

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// writeGate orders lock-free writes into allocated clusters before the
// freeing of those clusters (Q12). A writer on the overwrite path finds
// its host cluster without Image.mu; if a discard frees that cluster and
// another allocation reuses it while the write is in flight, the write
// lands in someone else's data. So the overwrite path enters the gate
// before it looks up the L2 entry and leaves it when its write is done,
// and whoever frees a data cluster that such a writer may have found
// first changes the entry, then waits (sync) for every writer that
// entered before, then drops the refcount. A writer that enters after
// the sync began sees the new entry.
//
// It is an epoch scheme with two counters: entering costs two atomic
// loads and one add on the writer's path, nothing is allocated, and only
// the rare freer waits.
type writeGate struct {
	epoch  atomic.Uint32
	_      [60]byte // keep the counters off the epoch's cache line
	n      [2]atomic.Int64
	syncMu sync.Mutex
}

// enter registers a writer and returns the token for exit.
func (g *writeGate) enter() uint32 {
	for {
		e := g.epoch.Load()
		g.n[e&1].Add(1)
		if g.epoch.Load() == e {
			return e
		}
		// A sync flipped the epoch in between: register in the new one,
		// so the sync never waits for a writer that looks up later.
		g.n[e&1].Add(-1)
	}
}

func (g *writeGate) exit(e uint32) { g.n[e&1].Add(-1) }

// sync returns once every writer that entered before the call has left.
// Callers must not hold anything a writer in the gate may wait for.
func (g *writeGate) sync() {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	e := g.epoch.Add(1) - 1
	for spins := 0; g.n[e&1].Load() != 0; spins++ {
		if spins < 64 {
			runtime.Gosched()
		} else {
			time.Sleep(20 * time.Microsecond)
		}
	}
}
