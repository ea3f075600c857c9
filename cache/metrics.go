package cache

import (
	"fmt"
	"sync/atomic"
)

// Metrics is a snapshot of a cache's counters. Counters are cumulative;
// the gauges (Dirty*, Pinned*, Owned*) describe the moment of the call.
type Metrics struct {
	// Hits are Gets served from memory (owned map, pending map or
	// ristretto); Misses needed the device (or, for GetEmpty, a new table).
	Hits, Misses int64
	// Loads are device reads of tables; LoadErrors the failed ones.
	Loads, LoadErrors int64
	// WriteBacks are tables written back; WriteOps the device write calls
	// carrying them (one per run of contiguous tables); WriteErrors the
	// tables whose write-back failed (they stay dirty).
	WriteBacks, WriteOps, WriteErrors int64
	// EvictionWriteBacks are tables written back to keep dirty bytes
	// bounded (C6); they are also counted in WriteBacks.
	EvictionWriteBacks int64
	// DepFlushes are dependency resolutions before a write-back: flushes of
	// the cache this one depends on, or device flushes for DependsOnFlush.
	DepFlushes int64
	// SetsDropped: ristretto's set buffer was full (Set returned false).
	// SetsRejected: ristretto's admission policy refused a table (OnReject;
	// includes a Set of a key ristretto already held). Evictions: OnEvict.
	// None of these loses state (C3).
	SetsDropped, SetsRejected, Evictions int64
	// CleanDrops are clean tables dropped by the cache-clean-interval
	// cleaner.
	CleanDrops int64
	// DirtyTables/DirtyBytes: dirty tables held in the owned map.
	DirtyTables, DirtyBytes int64
	// PinnedTables: tables with at least one pin (user or write-back).
	PinnedTables int64
	// OwnedTables: tables in the owned map (pinned, dirty or loading).
	OwnedTables int64
}

// Sub returns m minus o for the counters; gauges are taken from m.
func (m Metrics) Sub(o Metrics) Metrics {
	r := m
	r.Hits -= o.Hits
	r.Misses -= o.Misses
	r.Loads -= o.Loads
	r.LoadErrors -= o.LoadErrors
	r.WriteBacks -= o.WriteBacks
	r.WriteOps -= o.WriteOps
	r.WriteErrors -= o.WriteErrors
	r.EvictionWriteBacks -= o.EvictionWriteBacks
	r.DepFlushes -= o.DepFlushes
	r.SetsDropped -= o.SetsDropped
	r.SetsRejected -= o.SetsRejected
	r.Evictions -= o.Evictions
	r.CleanDrops -= o.CleanDrops
	return r
}

// HitRatio is Hits / (Hits + Misses), or 0.
func (m Metrics) HitRatio() float64 {
	if m.Hits+m.Misses == 0 {
		return 0
	}
	return float64(m.Hits) / float64(m.Hits+m.Misses)
}

func (m Metrics) String() string {
	return fmt.Sprintf("hits %d misses %d (%.1f%%) loads %d (err %d) writebacks %d in %d ops (err %d, evict %d) depflushes %d "+
		"sets dropped %d rejected %d evictions %d cleandrops %d dirty %d (%d B) pinned %d owned %d",
		m.Hits, m.Misses, 100*m.HitRatio(), m.Loads, m.LoadErrors, m.WriteBacks, m.WriteOps, m.WriteErrors,
		m.EvictionWriteBacks, m.DepFlushes, m.SetsDropped, m.SetsRejected, m.Evictions, m.CleanDrops,
		m.DirtyTables, m.DirtyBytes, m.PinnedTables, m.OwnedTables)
}

// counters are updated without the cache lock where possible (ristretto
// callbacks run on ristretto's goroutine, C8).
type counters struct {
	hits, misses, loads, loadErrors      atomic.Int64
	writeBacks, writeOps, writeErrors    atomic.Int64
	evictionWriteBacks, depFlushes       atomic.Int64
	setsDropped, setsRejected, evictions atomic.Int64
	cleanDrops                           atomic.Int64
}

// Metrics returns a snapshot of the counters and gauges.
func (c *Cache) Metrics() Metrics {
	m := Metrics{
		Hits:               c.m.hits.Load(),
		Misses:             c.m.misses.Load(),
		Loads:              c.m.loads.Load(),
		LoadErrors:         c.m.loadErrors.Load(),
		WriteBacks:         c.m.writeBacks.Load(),
		WriteOps:           c.m.writeOps.Load(),
		WriteErrors:        c.m.writeErrors.Load(),
		EvictionWriteBacks: c.m.evictionWriteBacks.Load(),
		DepFlushes:         c.m.depFlushes.Load(),
		SetsDropped:        c.m.setsDropped.Load(),
		SetsRejected:       c.m.setsRejected.Load(),
		Evictions:          c.m.evictions.Load(),
		CleanDrops:         c.m.cleanDrops.Load(),
	}
	c.mu.Lock()
	m.DirtyTables = int64(c.ndirty)
	m.PinnedTables = int64(c.npinned)
	m.OwnedTables = int64(len(c.owned))
	c.mu.Unlock()
	m.DirtyBytes = m.DirtyTables * int64(c.cfg.TableSize)
	return m
}
