package qcow2

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Metrics are engine counters since Open (a snapshot; see Image.Metrics).
type Metrics struct {
	GuestReads, GuestWrites           int64
	GuestBytesRead, GuestBytesWritten int64
	ClustersAllocated                 int64 // data clusters
	L2TablesAllocated                 int64
	RefblocksAllocated                int64
	ReftableGrowths                   int64
	// COWBytes were copied from a backing file or an old cluster.
	COWBytes int64
	// ZeroPadBytes are zero-buffer bytes written around guest data
	// (prealloc=off, or the fallback when zeroing is refused).
	ZeroPadBytes int64
	// Fallocates are efficient zeroing requests (Allocate) for COW areas;
	// ZeroingRefused counts those the device refused (fell back to COW).
	Fallocates     int64
	ZeroingRefused int64
	// FreshSkips are new clusters in fresh space that needed no zeroing.
	FreshSkips int64
	// AllocWaits are writes that waited for another allocation of the
	// same cluster.
	AllocWaits int64
	// EarlyWrites went into a cluster under allocation before its L2
	// link, without waiting (Q10).
	EarlyWrites int64
	// RunClusters are the clusters of ClustersAllocated that were
	// allocated in runs: whole clusters of one write, planned, written
	// and linked together (allocrun.go).
	RunClusters int64
	// Reservations are preallocate-ahead zeroing requests.
	Reservations int64
	// FillBytes are zeros written over reserved space ahead of
	// allocation (prealloc-fill=zeroes, Q11); FillWaits are allocations
	// that waited for such a write of the same space; FillErrors is 1
	// once a failed fill write turned filling off.
	FillBytes, FillWaits, FillErrors int64
	// PunchedBytes is host space given back to the file system after a
	// Discard or an unmapping zeroing freed its clusters (Q21).
	PunchedBytes int64
	// QueueFast are queued requests (Queue) that went straight to the
	// device's queue; QueueAlloc those that went to its allocator (Q16);
	// QueueSlow those that ran the synchronous path. QueueAllocSync are
	// those of QueueAlloc that the allocator handed to the synchronous
	// path (their cluster was under another allocation or linked
	// meanwhile, or their group failed and ran again request by request).
	QueueFast, QueueAlloc, QueueSlow, QueueAllocSync int64
	MetaWrites                                       int64 // direct metadata writes (header, L1, reftable)
	Flushes                                          int64
	L2Hits                                           int64
	L2Misses                                         int64
	RefcntHits                                       int64
	RefcntMisses                                     int64
	// Prealloc is the preallocation strategy chosen at open (not a
	// counter: Sub keeps the receiver's).
	Prealloc PreallocInfo
}

// PreallocInfo describes how new clusters get their space.
type PreallocInfo struct {
	On         bool   // prealloc=on (the seed's switch)
	Ahead      int64  // reserve-ahead chunk in bytes (0: no reserve)
	AheadAlign int64  // its alignment
	Fill       string // FillZeroes or FillUnwritten ("" without a reserve)
	FillReason string // e.g. "auto: ram", "auto: ssd", "prealloc-fill=zeroes"
}

// String is e.g. "ahead 128 MiB, fill zeroes (auto: ram)".
func (p PreallocInfo) String() string {
	switch {
	case !p.On:
		return "off"
	case p.Ahead == 0:
		return "on, no reserve ahead"
	}
	return fmt.Sprintf("ahead %s, fill %s (%s)", sizeString(p.Ahead), p.Fill, p.FillReason)
}

// sizeString prints whole MiB or KiB when exact, else bytes.
func sizeString(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

type counters struct {
	guestReads, guestWrites, guestBytesRead, guestBytesWritten  atomic.Int64
	clustersAllocated, l2TablesAllocated, refblocksAllocated    atomic.Int64
	reftableGrowths, cowBytes, zeroPadBytes, fallocates         atomic.Int64
	zeroingRefused, freshSkips, allocWaits, metaWrites, flushes atomic.Int64
	earlyWrites, reservations, runClusters                      atomic.Int64
	fillBytes, fillWaits, fillErrors                            atomic.Int64
	punchedBytes                                                atomic.Int64
	queueFast, queueAlloc, queueSlow, queueAllocSync            atomic.Int64
}

// Sub returns m - o, field by field.
func (m Metrics) Sub(o Metrics) Metrics {
	return Metrics{
		GuestReads: m.GuestReads - o.GuestReads, GuestWrites: m.GuestWrites - o.GuestWrites,
		GuestBytesRead: m.GuestBytesRead - o.GuestBytesRead, GuestBytesWritten: m.GuestBytesWritten - o.GuestBytesWritten,
		ClustersAllocated: m.ClustersAllocated - o.ClustersAllocated, L2TablesAllocated: m.L2TablesAllocated - o.L2TablesAllocated,
		RefblocksAllocated: m.RefblocksAllocated - o.RefblocksAllocated, ReftableGrowths: m.ReftableGrowths - o.ReftableGrowths,
		COWBytes: m.COWBytes - o.COWBytes, ZeroPadBytes: m.ZeroPadBytes - o.ZeroPadBytes,
		Fallocates: m.Fallocates - o.Fallocates, ZeroingRefused: m.ZeroingRefused - o.ZeroingRefused,
		FreshSkips: m.FreshSkips - o.FreshSkips, AllocWaits: m.AllocWaits - o.AllocWaits, EarlyWrites: m.EarlyWrites - o.EarlyWrites, Reservations: m.Reservations - o.Reservations,
		RunClusters: m.RunClusters - o.RunClusters,
		MetaWrites:  m.MetaWrites - o.MetaWrites, Flushes: m.Flushes - o.Flushes,
		FillBytes: m.FillBytes - o.FillBytes, FillWaits: m.FillWaits - o.FillWaits, FillErrors: m.FillErrors - o.FillErrors,
		PunchedBytes: m.PunchedBytes - o.PunchedBytes,
		QueueFast:    m.QueueFast - o.QueueFast, QueueAlloc: m.QueueAlloc - o.QueueAlloc, QueueSlow: m.QueueSlow - o.QueueSlow,
		QueueAllocSync: m.QueueAllocSync - o.QueueAllocSync,
		Prealloc:       m.Prealloc,
		L2Hits:         m.L2Hits - o.L2Hits, L2Misses: m.L2Misses - o.L2Misses,
		RefcntHits: m.RefcntHits - o.RefcntHits, RefcntMisses: m.RefcntMisses - o.RefcntMisses,
	}
}

func (m Metrics) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "guest: %d reads (%d B), %d writes (%d B)\n", m.GuestReads, m.GuestBytesRead, m.GuestWrites, m.GuestBytesWritten)
	fmt.Fprintf(&b, "alloc: %d clusters (%d in runs), %d L2 tables, %d refblocks, %d reftable growths, %d waits, %d early writes\n", m.ClustersAllocated, m.RunClusters, m.L2TablesAllocated, m.RefblocksAllocated, m.ReftableGrowths, m.AllocWaits, m.EarlyWrites)
	fmt.Fprintf(&b, "cow: %d B copied, %d B zero padding, %d fallocates (%d refused), %d fresh skips, %d reservations ahead\n", m.COWBytes, m.ZeroPadBytes, m.Fallocates, m.ZeroingRefused, m.FreshSkips, m.Reservations)
	fmt.Fprintf(&b, "prealloc: %s; %d B filled ahead, %d fill waits, %d fill errors\n", m.Prealloc, m.FillBytes, m.FillWaits, m.FillErrors)
	if m.PunchedBytes > 0 {
		fmt.Fprintf(&b, "discard: %d B of freed clusters given back to the file system\n", m.PunchedBytes)
	}
	if m.QueueFast+m.QueueAlloc+m.QueueSlow > 0 {
		fmt.Fprintf(&b, "queue: %d fast, %d allocated (%d of them handed to the synchronous path), %d slow\n", m.QueueFast, m.QueueAlloc, m.QueueAllocSync, m.QueueSlow)
	}
	fmt.Fprintf(&b, "meta: %d direct writes, %d flushes; L2 cache %d hits %d misses; refcount cache %d hits %d misses\n", m.MetaWrites, m.Flushes, m.L2Hits, m.L2Misses, m.RefcntHits, m.RefcntMisses)
	return b.String()
}
