package qcow2

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/cache"
	"github.com/qring/qring/internal/invariants"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// Image is an open qcow2 image.
type Image struct {
	dev        block.Device
	ownDev     bool
	path       string
	backing    block.Device
	ownBacking bool
	bsize      int64 // backing device size
	bzero      zeroProber
	df         dataFile // the external data file (datafile.go), set at open

	hdr *format.Header
	// hdrDisk is the start of cluster 0 as the media holds it, up to the
	// end of what its header reads: what the next header rewrite must
	// leave alone until its last write (FM6). Under mu, as hdr.
	hdrDisk []byte
	// hdrLost: a header write failed and may have landed, so hdrDisk
	// is not known to be the media's; header writes are refused
	// (errHeaderLost) until the image is reopened. Under mu.
	hdrLost bool
	g       format.Geometry
	ro      bool
	opts    Options
	dcap    block.Caps
	// metaAlign is the alignment for direct metadata writes (L1 and
	// reftable entries, header): the device's request alignment.
	metaAlign int64
	memAlign  int
	prealloc  bool
	lazy      bool
	// pinfo is the preallocation strategy chosen at open (immutable:
	// Metrics reads it without mu; ahead may drop to 0 later).
	pinfo PreallocInfo
	space hostSpace // the file's space past what refcounts describe (SP1-SP4)

	// crypt is the LUKS encryption state (crypt.go), nil for plain
	// images; set at open.
	crypt *imageCrypt

	mu sync.Mutex
	// l1 is the active L1 table, read lock-free (growL1 replaces it),
	// and l1Off/l1Len mirror its place (overlap checks).
	l1           atomic.Pointer[l1Table]
	l1Off, l1Len atomic.Uint64
	// snapOff/snapLen mirror the snapshot table's place (overlap checks).
	snapOff, snapLen atomic.Uint64
	reftable         []format.HostOff // refcount block offsets (or 0)
	l2c, rbc         *cache.Cache
	sliceSize        uint64
	freeIdx          uint64 // first-fit search start (cluster index)
	// compFree is where the next compressed stream may start, inside a
	// host cluster that holds compressed data (0: none; compress_write.go).
	compFree format.HostOff
	// held: host clusters freed but not handed out again yet (Q12, Q13;
	// held.go).
	held map[uint64]heldCluster
	// freeing: discards' lists of old entries not freed yet (zero.go);
	// their references still count (Check).
	freeing map[*freeList]struct{}
	// hsize mirrors hdr.Size, ver hdr.Version, and ctype
	// hdr.CompressionType, for lock-free readers (hdr changes under mu:
	// every header write stores the whole of it). vsize is the size guests may address:
	// hsize, but lower while a Shrink waits for writes before it changes
	// the header (Q18). Range checks use vsize; what treats the end of
	// the disk specially (a partial last cluster taken whole) uses
	// hsize, so a refused Shrink leaves no trace.
	hsize, vsize atomic.Uint64
	ver          atomic.Uint32
	ctype        atomic.Uint32
	// writers holds every synchronous guest write call (Writev,
	// WriteZeroes, Discard, WriteCompressed) from before its size check
	// to its return, so a Shrink can wait for those that checked
	// against the old size (Q18). resizeMu serialises Truncate, Shrink
	// and ApplySnapshot.
	writers  dataGate
	resizeMu sync.Mutex
	// state mirrors closed/ro/corrupt for the lock-free data path.
	state atomic.Uint32
	// queues counts open Queues (Q15); raised under mu, so Close,
	// which reads it under mu, never misses one being opened.
	queues atomic.Int32
	// rtOff/rtLen mirror the refcount table's place (overlap checks).
	rtOff, rtLen atomic.Uint64
	snapshots    []format.Snapshot
	// snapTable is the whole snapshot table when a lenient open left
	// entries out of snapshots (Q19; the image is read-only for good):
	// Check reports incomplete entries by their place in it, as QEMU.
	snapTable []format.Snapshot
	dirtySet  bool // dirty bit written (lazy refcounts)
	// dirtyKept: the image was dirty at open and its refcounts could not
	// be repaired (repairDirty): the bit stays until a repair succeeds.
	dirtyKept bool
	// needRepair: opened for repair with the dirty bit set, and not yet
	// repaired by a Check (markCleanAfterCheck): nothing is written.
	needRepair bool
	// bitmapsKept: opened for repair with valid persistent bitmaps,
	// whose autoclear bit stays (clearAutoclear): guest writes, which
	// would make them stale, are refused until the image is reopened.
	bitmapsKept bool
	// bitmaps are the persistent dirty bitmaps maintained while the
	// image is open (Q22), nil when none is.
	bitmaps atomic.Pointer[bitmapSet]
	// roBitmaps are the bitmaps of an image opened read-only, read from
	// the media once (DirtyRun).
	roBitmaps atomic.Pointer[bitmapSet]
	// bitmapsOpening: a writable open keeps the bitmaps' autoclear bit
	// until loadBitmaps decides.
	bitmapsOpening bool
	corrupt        bool
	corruptCause   error      // what markCorrupt was told
	damage         openDamage // what a lenient open let by (Q19); set at open only
	writesLost     bool       // loseWritesLocked: writes refused (ErrWritesLost)
	copiedOwed     bool       // COPIED not yet set by the counts (fixCopiedLocked)
	repairing      bool       // a Check with repair runs (checkRepairLocked)
	l1FlagsStale   bool       // the active L1's COPIED flags in memory may not be on the media (copiedByCountsLocked)
	// lostErr is the error writes fail with once writesLost: it matches
	// ErrWritesLost and the failure that caused it. Written under mu
	// before state publishes stLost, read by whoever saw stLost.
	lostErr error
	closed  bool
	closing bool // Close has begun: writes are refused (stClosed)
	// closeUnwaited: Close's wait for the writes in flight ran out, and
	// its flush may come before one of them lands: such a write fails
	// with ErrClosed instead of being acknowledged (writev, writeZeroes).
	closeUnwaited atomic.Bool
	// metaPrealloc: whether the host file looks metadata-preallocated,
	// decided once (HostHoles), as QEMU decides it once per open.
	metaPrealloc struct {
		once sync.Once
		yes  bool
	}
	// snapLoaded: LoadSnapshotTemp put a snapshot's L1 table in the
	// active one's place; Check, which takes the L1 for the active
	// layer's, refuses from then on.
	snapLoaded bool

	// snapsPub is the snapshot list for lock-free readers once a
	// snapshot operation changed it (snapshot.go).
	snapsPub atomic.Pointer[[]format.Snapshot]

	meta metaSet // roles of L2 and refcount block clusters (overlap checks)
	// allocs registers the guest clusters under allocation (Q7), each
	// with its allocation's state (inflight.go, Q10).
	allocs sched.ClusterLocks[allocState]
	gate   dataGate // lock-free overwrites and reads vs freeing (Q12)
	// snapPause, while CreateSnapshot runs, makes overwrites wait for
	// it (pauseOverwrites); snapMu serialises those pauses.
	snapPause atomic.Pointer[chan struct{}]
	snapMu    sync.Mutex
	// idleWait bounds lockIdle's and pauseOverwrites' waits (0: about a
	// second) and Close's wait for writers (0: closeWait); tests set it
	// longer on loaded machines, or short to hold a write past Close.
	idleWait time.Duration
	// linkFault, if set (tests), fails the L2 link of new clusters.
	linkFault func() error
	// readyPause, if set (tests), runs after allocations are ready for
	// early writers and before they are sealed (Q10): it widens that
	// window, which is otherwise a few instructions where nothing was
	// ready earlier (COW, encrypted images).
	readyPause func()
	c          counters
}

var (
	_ block.Device = (*Image)(nil)
	_ io.ReaderAt  = (*Image)(nil)
	_ io.WriterAt  = (*Image)(nil)
)

// zeroProber is implemented by backing devices that can tell cheaply
// whether a range reads as zeros (an *Image; holeProber for the others
// that map their holes).
type zeroProber interface {
	IsZeroFast(off, n int64) bool
}

// Header returns a copy of the decoded header.
func (im *Image) Header() format.Header {
	im.mu.Lock()
	defer im.mu.Unlock()
	return *im.hdr
}

// Geometry returns the image geometry.
func (im *Image) Geometry() format.Geometry {
	// Under mu: SetRefcountBits changes the refcount fields.
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.g
}

// ReadOnly reports whether writes are refused.
func (im *Image) ReadOnly() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.ro || im.corrupt || im.writesLost || im.needRepair || im.bitmapsKept
}

// Backing returns the backing device, or nil.
func (im *Image) Backing() block.Device { return im.backing }

// Device returns the device the image is stored on (for its metrics;
// writing to it directly corrupts the image).
func (im *Image) Device() block.Device { return im.dev }

// Size is the virtual size.
func (im *Image) Size() (int64, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return 0, block.ErrClosed
	}
	return int64(im.vsize.Load()), nil
}

// Caps: Allocate and MayUnmap on v3 (zero clusters), for cluster-aligned
// ranges (ZeroAlign); guest requests need no alignment.
func (im *Image) Caps() block.Caps {
	c := block.Caps{Align: 1, MemAlign: 1, ZeroAlign: int64(im.g.ClusterSize)}
	if im.ver.Load() >= 3 { // lock-free: the mirror
		c.ZeroFlags = block.Allocate | block.MayUnmap
	} else {
		c.ZeroFlags = block.MayUnmap
	}
	return c
}

// Metrics returns a snapshot of the engine counters.
func (im *Image) Metrics() Metrics {
	c := &im.c
	m := Metrics{
		GuestReads: c.guestReads.Load(), GuestWrites: c.guestWrites.Load(),
		GuestBytesRead: c.guestBytesRead.Load(), GuestBytesWritten: c.guestBytesWritten.Load(),
		ClustersAllocated: c.clustersAllocated.Load(), L2TablesAllocated: c.l2TablesAllocated.Load(),
		RefblocksAllocated: c.refblocksAllocated.Load(), ReftableGrowths: c.reftableGrowths.Load(),
		COWBytes: c.cowBytes.Load(), ZeroPadBytes: c.zeroPadBytes.Load(), Fallocates: c.fallocates.Load(),
		ZeroingRefused: c.zeroingRefused.Load(), FreshSkips: c.freshSkips.Load(), AllocWaits: c.allocWaits.Load(), EarlyWrites: c.earlyWrites.Load(), Reservations: c.reservations.Load(),
		RunClusters: c.runClusters.Load(),
		MetaWrites:  c.metaWrites.Load(), Flushes: c.flushes.Load(),
		FillBytes: c.fillBytes.Load(), FillWaits: c.fillWaits.Load(), FillErrors: c.fillErrors.Load(),
		PunchedBytes: c.punchedBytes.Load(),
		QueueFast:    c.queueFast.Load(), QueueAlloc: c.queueAlloc.Load(), QueueSlow: c.queueSlow.Load(),
		QueueAllocSync: c.queueAllocSync.Load(),
		Prealloc:       im.pinfo,
	}
	if im.l2c != nil {
		lm := im.l2c.Metrics()
		m.L2Hits, m.L2Misses = int64(lm.Hits), int64(lm.Misses)
		rm := im.rbc.Metrics()
		m.RefcntHits, m.RefcntMisses = int64(rm.Hits), int64(rm.Misses)
	}
	return m
}

// CacheMetrics returns the L2 and refcount cache metrics.
func (im *Image) CacheMetrics() (l2, refcount cache.Metrics) {
	return im.l2c.Metrics(), im.rbc.Metrics()
}

// errHeaderLost: a header write failed earlier (Image.hdrLost).
var errHeaderLost = errors.New("qcow2: a header write failed and may have landed: no header write until the image is reopened")

// writeHeader rewrites cluster 0 from im.hdr (unknown fields and
// extensions preserved, FM3), as format.PlanHeaderWrite plans it (FM6).
// Caller holds mu or is single-threaded.
func (im *Image) writeHeader() error {
	if im.hdrLost {
		return errHeaderLost
	}
	ws, err := format.PlanHeaderWrite(im.hdrDisk, im.hdr)
	if err != nil {
		return err
	}
	for i, w := range ws {
		if i > 0 {
			// A layout change (FM6): the bytes past the first sector
			// the new header reads are durable before it is.
			if err := im.dev.Flush(); err != nil {
				im.hdrLost = true
				return err
			}
		}
		buf := block.AlignedBuf(len(w), im.memAlign)
		copy(buf, w)
		if err := im.writeMeta(buf, 0); err != nil {
			// It may have landed: the media holds the old header or
			// the new one, and a plan against either could tear the
			// other (FM6). No header write until the image is
			// reopened; a dirty bit stays set, which the next open
			// repairs.
			im.hdrLost = true
			return err
		}
	}
	last := ws[len(ws)-1]
	im.hdrDisk = append([]byte(nil), last[:min(uint64(len(last)), format.HeaderUsedEnd(im.hdr))]...)
	return nil
}

// tableChunk returns the aligned chunk of an on-disk table of 8-byte
// entries that holds entry i: its first entry and its length in entries
// (QEMU writes max(8, request alignment) bytes).
func (im *Image) tableChunk(i uint64) (first, per uint64) {
	per = uint64(im.metaAlign) / format.TableEntrySize
	if per*format.TableEntrySize > im.g.ClusterSize {
		per = im.g.ClusterSize / format.TableEntrySize
	}
	return i / per * per, per
}

// writeL1Entry writes the chunk of the on-disk active L1 table that holds
// entry i.
func (im *Image) writeL1Entry(i uint64) error {
	t := im.l1.Load()
	first, per := im.tableChunk(i)
	buf := block.AlignedBuf(int(per*format.TableEntrySize), im.memAlign)
	for k := uint64(0); k < per && first+k < t.size(); k++ {
		format.PutL1(buf, k, t.load(first+k))
	}
	return im.writeMeta(buf, im.hdr.L1TableOffset+format.HostOff(first*format.TableEntrySize))
}

// writeReftableEntry writes the chunk of the on-disk refcount table that
// holds entry i.
func (im *Image) writeReftableEntry(i uint64) error {
	first, per := im.tableChunk(i)
	buf := block.AlignedBuf(int(per*format.TableEntrySize), im.memAlign)
	for k := uint64(0); k < per && first+k < uint64(len(im.reftable)); k++ {
		format.PutReftable(buf, k, im.reftable[first+k])
	}
	return im.writeMeta(buf, im.hdr.RefcountTableOffset+format.HostOff(first*format.TableEntrySize))
}

// writeMeta writes the aligned buffer buf of metadata at off, directly
// (not through a cache).
func (im *Image) writeMeta(buf []byte, off format.HostOff) error {
	im.c.metaWrites.Add(1)
	return block.WriteAt(im.dev, buf, int64(off))
}

// writeTable writes a new table of n bytes, held at the start of buf,
// at off (the clusters taken for it): its bytes only, up to the device's
// request alignment, not its clusters' zeros past them, as QEMU writes
// a table (an L1 copy, the snapshot table, a bitmap table or directory).
// The file may then end inside the table's last cluster: nothing reads
// past a table's bytes, the rest of the cluster is its own (no other
// allocation lands there), and the space past it reads as zeros as any
// past the end of the file (SP2; the high-water mark covers the whole
// cluster, so no reserve zeroes it). On a nearly full file system the
// table needs room for its bytes alone, as in QEMU, not for up to a
// cluster of zeros more.
func (im *Image) writeTable(buf []byte, n uint64, off format.HostOff) error {
	a := uint64(max(im.dcap.Align, 1))
	return im.writeMeta(buf[:min((n+a-1)/a*a, uint64(len(buf)))], off)
}

// markCorrupt sets the corrupt bit (best effort) and makes the image
// read-only (Q9).
func (im *Image) markCorrupt(cause error) error {
	if !im.corrupt {
		im.corrupt = true
		im.corruptCause = cause
		im.syncState()
		if im.hdr.Version >= 3 && !im.ro {
			im.hdr.IncompatibleFeatures |= format.IncompatCorrupt
			if im.writeHeader() == nil {
				im.dev.Flush()
			}
		}
	}
	if im.ro {
		// Nothing is marked in an image opened read-only (QEMU's
		// non-fatal corruption event): the cause alone.
		return cause
	}
	return fmt.Errorf("qcow2: marking image as corrupt: %w", cause)
}

// Close flushes metadata, clears the dirty bit and releases the image. On
// an image marked corrupt it releases the image without flushing and
// returns an error wrapping ErrCorrupt.
func (im *Image) Close() error {
	// As QEMU drains before it closes: allocating writes still running
	// on other goroutines finish first, and so do the frees of discards
	// and zeroings, and then writes in place (up to closeWait for the
	// writes, about a second for the frees; a write that commits, or
	// lands in place, after that fails with ErrClosed, unacknowledged,
	// and the clusters it allocated, or a free after it, leak). An open
	// queue's are not waited for: Close refuses below (Q15).
	if im.queues.Load() > 0 || im.lockQuiet(true) != nil {
		im.mu.Lock()
	}
	if im.closed {
		im.mu.Unlock()
		return block.ErrClosed
	}
	if im.queues.Load() > 0 {
		// Q15: the queue's requests hold the data gate and the device.
		im.mu.Unlock()
		return ErrQueueOpen
	}
	// Writes in place take no lock, and lockQuiet drains allocations
	// only: refuse new writes, wait for those in flight (the writers
	// gate, Q18; bounded, as storeBitmapsLocked's wait), and fail one
	// that outlasts the wait (writev), so that no write is acknowledged
	// after the flush below without being durable (review 46). One the
	// wait covered completes as it would have: the flush covers it.
	im.closing = true
	im.syncState()
	// Without mu: a writer in the gate may be waiting for it (an
	// allocating write, a zeroing, a discard); holding it, the wait
	// timed out and the bitmaps were left in use. Such a writer now
	// completes (or fails) and leaves; new ones see the state.
	im.mu.Unlock()
	if !im.writers.syncWithin(im.closeWaitOr()) {
		im.closeUnwaited.Store(true)
	}
	if im.lockQuiet(true) != nil {
		im.mu.Lock()
	}
	if im.closed { // another Close finished meanwhile
		im.mu.Unlock()
		return block.ErrClosed
	}
	// Q11: no zeros are written after Close, nor while trimReserved
	// truncates the reserve. Workers never take mu, so this cannot
	// deadlock.
	im.stopFill()
	var err error
	if im.corrupt && !im.ro {
		// As Flush: what was acknowledged since the last flush is not
		// made durable, and the caller must hear it (a read-only image
		// has nothing to make durable).
		err = fmt.Errorf("%w: image marked corrupt, closed without flushing: %v", ErrCorrupt, im.corruptCause)
	}
	if !im.ro && !im.corrupt {
		err = im.flushLocked()
		// Owed COPIED flags (Q6): their failure does not keep the
		// reserve or the dirty bit as they are; it is reported last.
		var serr error
		if err == nil {
			serr = im.settleCopiedLocked()
		}
		if err == nil && !im.writesLost {
			// Q22: after the flush, so the bitmaps cover every write
			// it made durable; a failure leaves them IN_USE (stale).
			if berr := im.storeBitmapsLocked(); berr != nil && serr == nil {
				serr = fmt.Errorf("qcow2: storing the dirty bitmaps: %w", berr)
			}
		}
		if err == nil && !im.writesLost {
			// After lost writes (Q16) the file may still hold their
			// locks: a truncate would wait for them for ever.
			err = im.trimReserved()
		}
		if err == nil && im.dirtySet && !im.dirtyKept {
			im.hdr.IncompatibleFeatures &^= format.IncompatDirty
			if err = im.writeHeader(); err == nil {
				err = im.dev.Flush()
				im.dirtySet = false
			}
		}
		if err == nil {
			err = serr
		}
	}
	im.closed = true
	im.syncState()
	im.mu.Unlock()
	im.closeCaches()
	im.closeBacking()
	if cerr := im.closeDataFile(); err == nil {
		err = cerr
	}
	if im.ownDev {
		if cerr := im.dev.Close(); err == nil {
			err = cerr
		}
	}
	if im.opts.CloseAfter != nil {
		if cerr := im.opts.CloseAfter(); err == nil {
			err = cerr
		}
	}
	return err
}

// Flush makes every write completed before the call durable (B6). Early
// writes (Q10) are acknowledged only once linked, so they are covered.
// On an image marked corrupt it fails: writes acknowledged before the
// corruption was found cannot be made durable.
func (im *Image) Flush() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return block.ErrClosed
	}
	if im.corrupt {
		return fmt.Errorf("%w: image marked corrupt, flush refused: %v", ErrCorrupt, im.corruptCause)
	}
	if im.ro {
		return nil
	}
	if err := im.flushLocked(); err != nil {
		return err
	}
	// The writes are durable: owed COPIED flags (Q6) are set by the
	// way, and stay owed if that fails (a flag out of step costs a copy
	// or a leak, never data), not failing the Flush.
	im.settleCopiedLocked()
	return nil
}

func (im *Image) flushLocked() error {
	im.c.flushes.Add(1)
	// Not on an image opened for repair: the corruption there is the
	// input's (a repair refused, say), not the engine's.
	if invariants.Enabled && !im.opts.Repair && !im.repairing && invariants.Sometimes(10) {
		// Refcounts never fall below references (Q1, Q3), and COPIED
		// is never set on a cluster that is not exclusively owned. A
		// COPIED flag missing on a cluster whose count just went back
		// to 1 (snapshot delete and apply fix them after the counts)
		// only costs a copy on the next write, and is let by.
		if r, err := im.checkLocked(CheckOptions{MaxMessages: 1 << 30, live: true}, RepairNone); err == nil && r.Corruptions > 0 && !onlyMissingCopied(r.Messages) {
			if err := invariants.Assertf(false, "flush: %d corruptions: %v", r.Corruptions, r.Messages[:min(len(r.Messages), 5)]); err != nil {
				return err
			}
		}
	}
	// The data file first: overwrites there are durable too, and the
	// links the L2 write-back makes find their data flushed (DF5).
	if err := im.dfFlush(); err != nil {
		return err
	}
	// L2 first: its dependency writes refcounts ahead of links (Q1);
	// refcount decrements that depend on L2 go after (Q3).
	if err := im.l2c.Write(); err != nil {
		return err
	}
	if err := im.rbc.Write(); err != nil {
		return err
	}
	if err := im.dev.Flush(); err != nil {
		return err
	}
	im.releaseHeldLocked(true) // Q13: the removals are durable
	return nil
}

// writableLocked says why metadata may not be changed now, if it may not.
func (im *Image) writableLocked() error {
	if im.closed {
		return block.ErrClosed
	}
	if im.ro || im.corrupt {
		return ErrReadOnly
	}
	if im.needRepair {
		return errNeedsRepair
	}
	if im.bitmapsKept {
		return errBitmapsKept
	}
	if im.writesLost {
		return im.lostErr
	}
	return nil
}

// setSizeLocked writes a new virtual size into the header (the old one
// stays on failure) and makes it durable.
func (im *Image) setSizeLocked(size uint64) error {
	old := im.hdr.Size
	im.hdr.Size = size
	if err := im.writeHeader(); err != nil {
		im.hdr.Size = old
		return err
	}
	im.vsize.Store(size)
	im.hsize.Store(size)
	return im.dev.Flush()
}

var errRetry = errors.New("qcow2: retry allocation")

const (
	stClosed uint32 = 1 << iota
	stNoWrite
	stLost // with stNoWrite: writes fail with ErrWritesLost
)

// loseWritesLocked makes the image refuse writes from now on (Q16): a
// queue's allocator gave up on writes in flight that may still land.
func (im *Image) loseWritesLocked(cause error) {
	if !im.writesLost {
		im.lostErr = &lostError{cause: cause}
	}
	im.writesLost = true
	// No more reserving ahead either: extending the file would wait
	// for the lost writes' hold on it (uring U3, U10).
	im.space.ahead = 0
	im.syncState()
}

// syncState publishes closed/ro/corrupt for lock-free readers. Called
// with mu held (or before the image is shared).
func (im *Image) syncState() {
	var s uint32
	if im.closed || im.closing {
		s |= stClosed
	}
	if im.ro || im.corrupt || im.needRepair || im.bitmapsKept {
		s |= stNoWrite
	}
	if im.writesLost {
		s |= stNoWrite | stLost
	}
	im.state.Store(s)
}

// onlyMissingCopied reports whether every error Check reported is a
// COPIED flag missing on a cluster whose refcount is 1 (an OFLAG_COPIED
// message ends with the refcount; with refcount=1 the flag was clear).
// A table that could not be read ("ERROR reading ...": a check error,
// no corruption; a dead disk under a flush) is not one either way.
func onlyMissingCopied(msgs []string) bool {
	for _, m := range msgs {
		if strings.HasPrefix(m, "ERROR reading ") {
			continue
		}
		if strings.HasPrefix(m, "ERROR") && !(strings.HasPrefix(m, "ERROR OFLAG_COPIED") && strings.HasSuffix(m, " refcount=1")) {
			return false
		}
	}
	return true
}
