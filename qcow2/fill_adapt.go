package qcow2

import "sync/atomic"

// This file can make the filler follow the guest (fill.go holds the
// filler): pause while the guest allocates sparsely, and on RAM write
// new clusters whole instead. prealloc-fill=auto did so until
// 2026-11-30; it no longer does, and only the torture configurations
// that pause and resume the filler (fillAdaptHook) use it now. With a
// queue's allocator (qcow2 Q16) the fill costs the guest nothing it
// waits for: on ext4 over zram, 64Ki 4 KiB writes, one per new 64 KiB
// cluster, 4 interleaved runs each, zeros streamed ahead took 0.63-0.80 s
// against 1.11-1.22 s paused with whole clusters (merging off:
// 0.69-0.87 s against 1.11-1.18 s paused with the data alone; DEPTH
// goroutines of synchronous writes: 0.87-1.01 s against 0.95-1.09 s),
// and the perf matrix (perf/results/2026-11-30-alloc, 3 repeats) found
// the zeroes setting as fast as the judged defaults or faster on every
// other workload, on ext4 and XFS (medians at most 2 % apart where it
// was not faster). On RAM, where auto fills, a paused judge
// wrote as many zeros (whole clusters) as the fill does, so nothing is
// saved by pausing there; on other media auto does not fill at all. What
// follows is the reasoning the judge was built on, kept with it.
//
// Zeros streamed ahead pay for themselves only when each new
// cluster then receives several first writes: each would otherwise split
// and convert an unwritten extent (on ext4 a journal transaction), while
// the fill costs one cluster of zero bandwidth per cluster allocated.
// A sequential writer of small requests (the seed: 16 writes per 64 KiB
// cluster) gains; an allocation-heavy writer (one 4 KiB request per new
// cluster) or large requests that cover a cluster at once lose: the zeros double or worse the bytes the
// device writes, for one conversion saved per cluster. Measured on ext4
// over zram (perf/matrix/run): per 64 KiB cluster, a conversion costs
// about 1 µs and a fill about 2.7 µs, so the fill wins from about three
// first writes per new cluster.
//
// But few writes per new cluster at allocation time do not mean few
// first writes per cluster in the end: a scattered writer (-S 4k*4099
// over the whole image) allocates every cluster with one write and then
// comes back fifteen times into each; without the fill each of those is
// a conversion, and the run takes 3.4 times as long on ext4 over zram
// (35 s against 10 s, 1M requests). What tells the two apart is where the
// guest goes: an allocation-heavy writer walks forward through guest
// clusters and leaves the rest of each behind, a scattered one jumps
// and will likely return. The filler cannot know the future, so it
// pauses only for the first kind.
//
// So with auto (when it resolved to zeroes) the filler judges the guest
// every fillJudgeClusters data clusters allocated: guest writes per byte
// of new space since the last judgment, and how many of those
// allocations lay within fillLocalClusters guest clusters of the one
// before (noteAlloc). At least one write per fillDenseSpan bytes of new
// space: fill ahead; fewer than one per fillSparseSpan, with at least
// three quarters of the allocations local (a forward walk): pause;
// otherwise keep the current choice (so a workload at the boundary does
// not flip at every judgment; a sparse scattered writer keeps filling).
// It starts filling, as before the judge existed, so a sequential writer
// never waits for evidence; a sparse forward writer pays for at most the
// window claimed ahead (fillLow+fillChunk) before the first judgment
// pauses it.
//
// Paused on RAM (zram, brd, tmpfs: zeros cost no wear, and zram keeps a
// page of zeros as a flag), a new cluster is written whole instead: the
// guest data with zeros around it in one request (padFresh), and no
// space is reserved ahead while paused (takeSpace), so new clusters past
// the reserve extend the file. Adjacent whole clusters then merge into
// large sequential writes (R8 in uring) that allocate written extents at
// once, where the data alone would split and convert an unwritten
// extent per cluster (the cost QEMU's preallocate filter pays too).
// Measured on zram (perf/results/2026-11-30-profile: 64Ki 4 KiB writes,
// one per new 64 KiB cluster, 5 interleaved runs, medians): ext4 1.52 s
// paused (data alone, in reserved space) -> 1.16 s whole clusters,
// XFS 1.80 -> 1.21 s; QEMU's preallocate filter 1.58 and 1.51 s. Padding
// inside the reserved (unwritten) space only was 1.28 and 1.36 s: the
// conversions, not the zeros, are the cost. Whole clusters cost 16
// times the guest bytes in zeros, which is why this is RAM only (auto
// never fills on an SSD at all: resolveFill).
//
// Pausing and resuming only change how many pieces are claimed, never
// where: a paused filler claims nothing, a resumed one claims from
// max(end of the claimed region, frontier) as always (Q11), and reserved
// space allocated while paused stays unwritten, hence fresh (SP2). Space
// past the reserve, which only padding on RAM allocates, is not fresh:
// its clusters are written whole, and their L2 write-back waits for a
// flush (linkLocked's flushFirst), one per write-back batch. The
// explicit modes (zeroes, unwritten) never adapt.

const (
	// fillJudgeClusters is how many data clusters are allocated between
	// judgments: 4 MiB of 64 KiB clusters, against at most 64 requests
	// in flight (4 clusters of the seed) blurring the count.
	fillJudgeClusters = 64
	// fillDenseSpan and fillSparseSpan: fill while the guest writes at
	// least once per fillDenseSpan bytes of new space, pause below one
	// write per fillSparseSpan.
	fillDenseSpan  = 16 << 10
	fillSparseSpan = 32 << 10
	// fillLocalClusters: an allocation within this many guest clusters
	// of the previous one is local (64 requests in flight reorder a
	// forward walk by up to that much).
	fillLocalClusters = 64
)

// fillAdaptHook, when set (tests only), makes every filler opened after
// it judge, also with prealloc-fill=zeroes, every clusters data clusters,
// and lets decide choose the new paused state from the current one: the
// torture configurations with zeroes then pause and resume the filler
// under crash clones (fill_adapt_test.go).
type fillAdaptHook struct {
	clusters int64
	decide   func(paused bool) bool
}

var fillAdaptTest atomic.Pointer[fillAdaptHook]

// fillJudge is the adaptive state of an auto filler (under filler.mu).
type fillJudge struct {
	adaptive bool  // prealloc-fill=auto: judge the guest
	paused   bool  // the last judgment found sparse allocation
	clusters int64 // clustersAllocated at the last judgment
	writes   int64 // guestWrites at the last judgment
	bytes    int64 // guestBytesWritten at the last judgment
	pauses   int64 // times the judge paused the filler (tests)
	// padRAM: the device is RAM, where zeros cost no wear; while paused,
	// a new cluster is written whole, the guest data with zeros around
	// it, and nothing is reserved ahead (padFresh).
	padRAM bool
	pad    atomic.Bool // padRAM && paused, read without filler.mu

	// Under Image.mu only (noteAlloc, judgeLocked).
	lastG        uint64 // guest cluster of the last data allocation
	seen         bool   // lastG is set
	noted, local int64  // data allocations since the last judgment, and the local ones
}

// noteAlloc tells the judge the guest cluster of a data cluster
// allocation (planAllocLocked, with mu held).
func (im *Image) noteAlloc(goff uint64) {
	f := &im.space.fill
	j := &f.judge
	if !f.enabled || !j.adaptive {
		return
	}
	g := goff / im.g.ClusterSize
	if j.seen && g+fillLocalClusters >= j.lastG && g <= j.lastG+fillLocalClusters {
		j.local++
	}
	j.lastG, j.seen = g, true
	j.noted++
}

// judgeLocked looks at the guest writes and data clusters allocated
// since the last judgment and pauses or resumes filling (the file's
// comment says why). Called with f.mu held, on every takeSpace.
func (f *filler) judgeLocked(im *Image) {
	j := &f.judge
	if !j.adaptive {
		return
	}
	hook := fillAdaptTest.Load()
	window := int64(fillJudgeClusters)
	if hook != nil {
		window = hook.clusters
	}
	clusters := im.c.clustersAllocated.Load()
	dc := clusters - j.clusters
	if dc < window {
		return
	}
	writes := im.c.guestWrites.Load()
	bytes := im.c.guestBytesWritten.Load()
	dw, db := writes-j.writes, bytes-j.bytes
	// No noted allocation (compressed streams only) says nothing about
	// where the guest goes: never a forward walk, so never a pause.
	forward := j.noted > 0 && j.local*4 >= j.noted*3
	j.clusters, j.writes, j.bytes, j.noted, j.local = clusters, writes, bytes, 0, 0
	space := dc * int64(im.g.ClusterSize)
	// A guest whose writes cover the new clusters (large requests, or a
	// queue's contiguous writes sent as one: qcow2 Q14) is sparse by
	// count but needs no zeros around its data: padding would add none,
	// and the reserve ahead stays, so its whole clusters are first
	// writes into reserved space rather than file extensions (measured
	// on ext4 over zram, 1M 4 KiB writes through a Queue: 2.6-3.3 s
	// with the reserve, 3.4-4.2 s extending the file).
	whole := db*4 >= space*3
	paused := j.paused
	switch {
	case hook != nil:
		paused = hook.decide(paused)
	case dw*fillDenseSpan >= space:
		paused = false
	case dw*fillSparseSpan < space && forward:
		paused = true
	}
	if paused && !j.paused {
		j.pauses++
	}
	j.paused = paused
	j.pad.Store(paused && j.padRAM && !whole)
}

// padFresh reports whether a new cluster gets its data and zeros around
// it in one write, and nothing is reserved ahead (the fill judge paused
// on RAM: this file's comment says why).
func (im *Image) padFresh() bool { return im.space.fill.judge.pad.Load() }
