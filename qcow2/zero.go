package qcow2

import (
	"errors"
	"slices"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// WriteZeroes makes [off, off+n) read as zeros. On v3 images whole
// clusters become zero clusters (freed with MayUnmap, kept preallocated
// otherwise); partial clusters are written with zero buffers. Allocate
// (NO_FALLBACK) is honoured only where no zero buffers would be written,
// else ErrNotSupported: v3, and cluster-aligned (subcluster-aligned with
// extended L2) or (as QEMU) with each unaligned edge in a cluster
// (subcluster) that reads as zeros outside the range already, which
// becomes a zero cluster (subcluster); both edges are checked before
// either changes, so a refusal changes nothing, unless a write beside
// in flight fills an edge's cluster after that check: zeroRange then
// refuses at that edge with the clusters before it zeroed already (B3;
// TestZeroAllocate_RacesWriteBeside). On an encrypted image
// both ends must be 512-aligned too (QEMU's request alignment there).
// Without Allocate, such an edge becomes a zero cluster too rather than
// a cluster of zeros, and on version 2 without a backing file an
// unallocated one stays so.
func (im *Image) WriteZeroes(off, n int64, flags block.Flags) error {
	return im.signal(im.writeZeroes(off, n, flags))
}

func (im *Image) writeZeroes(off, n int64, flags block.Flags) (err error) {
	tok := im.writers.enter() // Q18: before the size check
	defer im.writers.exit(tok)
	defer func() {
		// As writev: zero buffers in place may land after Close's
		// flush (review 46).
		if err == nil && im.closeUnwaited.Load() {
			err = block.ErrClosed
		}
	}()
	if err := im.checkWrite(off, n); err != nil || n == 0 {
		return err
	}
	im.markDirty(off, n)       // Q22
	defer im.markDirty(off, n) // Q22: and again once done (a bitmap cleared, added or enabled meanwhile)
	g := &im.g
	cs := int64(g.ClusterSize)
	gran := cs // granularity of zero entries (Allocate): clusters, or subclusters
	if g.ExtendedL2 {
		gran = int64(g.SubclusterSize())
	}
	if flags&^(block.Allocate|block.MayUnmap) != 0 {
		return block.ErrNotSupported
	}
	// An encrypted image's request alignment is the encryption sector
	// (QEMU's qcow2_refresh_limits): an Allocate whose ends are not
	// aligned to it needs a padding write of data, which QEMU's block
	// layer refuses (ENOTSUP) before the (sub)cluster checks below.
	if flags&block.Allocate != 0 && im.crypt != nil && (off%512 != 0 || (off+n)%512 != 0) {
		return block.ErrNotSupported
	}
	// Lock-free: the version and size mirrors (Image.ver, hsize).
	if flags&block.Allocate != 0 && (im.ver.Load() < 3 || off%gran != 0 || (n%gran != 0 && uint64(off+n) != im.hsize.Load())) {
		if im.ver.Load() < 3 {
			return block.ErrNotSupported
		}
		// Both edges before anything else: zeroRange decides again
		// (a write beside may have come since) and refuses then.
		zeroEdges := im.zeroEdgesIfZero
		if g.ExtendedL2 {
			zeroEdges = im.xzeroEdgesIfZero
		}
		if err := zeroEdges(off, n); err != nil {
			return err
		}
	}
	if flags&block.Allocate != 0 && g.ExtendedL2 {
		// Before anything else, so that a refusal changes nothing.
		if c, err := im.xedgeCompressed(off, n); err != nil || c {
			if err == nil {
				err = block.ErrNotSupported
			}
			return err
		}
	}
	if err := im.dfZeroRaw(off, n, flags); err != nil { // DF6
		return err
	}
	return im.zeroRange(off, n, flags, int64(im.hsize.Load()))
}

// xedgeCompressed reports whether a partial cluster at an edge of
// [off, off+n) is compressed: xzeroPartial zeroes part of one only with
// buffers, which Allocate refuses. (One compressed since is still
// refused there, by zeroRange, which then frees what it had unmapped.)
func (im *Image) xedgeCompressed(off, n int64) (bool, error) {
	cs := int64(im.g.ClusterSize)
	end := off + n
	var edges []int64
	if off%cs != 0 {
		edges = append(edges, off)
	}
	if end%cs != 0 && uint64(end) != im.hsize.Load() {
		edges = append(edges, end-1)
	}
	if len(edges) == 0 {
		return false, nil
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	for _, o := range edges {
		e, _, err := im.xentry(guestOff(o))
		if err != nil {
			return false, err
		}
		if e.Compressed() {
			return true, nil
		}
	}
	return false, nil
}

// zeroEdgesIfZero makes the clusters of the unaligned edges of
// [off, off+n) zero clusters if each reads as zeros outside the range
// (zeroIfReadsZero), else ErrNotSupported. With two edges both are
// checked before either changes: zeroing one makes the range's part of
// it read as zeros, a guest-visible change a refusal must not leave.
func (im *Image) zeroEdgesIfZero(off, n int64) error {
	cs := int64(im.g.ClusterSize)
	end := off + n
	var edges []int64
	if off%cs != 0 {
		edges = append(edges, off)
	}
	if end%cs != 0 && uint64(end) != im.hsize.Load() && (len(edges) == 0 || (end-1)/cs != off/cs) {
		edges = append(edges, end-1)
	}
	fr := freeList{}
	defer im.release(&fr)
	pass := func(dry bool) error {
		for _, e := range edges {
			c := e / cs * cs
			// The part of [off, end) in this cluster: the rest of the
			// cluster must read as zeros, as QEMU's head and tail check.
			p, q := max(off, c), min(end, c+cs)
			done := false
			err := im.holdSectors(c, cs, func() error {
				var err error
				done, err = im.zeroIfReadsZero(guestOff(c), p, q, dry, false, &fr)
				return err
			})
			if err != nil {
				return err
			}
			if !done {
				return block.ErrNotSupported
			}
		}
		return nil
	}
	if len(edges) > 1 {
		if err := pass(true); err != nil {
			return err
		}
	}
	if err := pass(false); err != nil {
		return err
	}
	return im.freeAfterWriters(&fr)
}

// zeroRange is WriteZeroes' work on a range already checked, for a
// virtual size of vend (a growth zeroes past the size guests see: Q18):
// a last cluster that ends at vend is zeroed whole.
func (im *Image) zeroRange(off, n int64, flags block.Flags, vend int64) error {
	cs := int64(im.g.ClusterSize)
	fr := freeList{punch: flags&block.MayUnmap != 0}
	defer im.release(&fr)
	for n > 0 {
		in := off % cs
		chunk := min(cs-in, n)
		whole := in == 0 && (chunk == cs || off+chunk == vend)
		var err error
		if whole && im.ver.Load() >= 3 {
			err = im.holdSectors(off, chunk, func() error {
				return im.zeroCluster(guestOff(off), flags&block.MayUnmap != 0, noDiscard, &fr)
			})
			if errors.Is(err, errNoZeroClusters) {
				// Downgraded meanwhile (SetVersion): as on version 2.
				if flags&block.Allocate != 0 {
					err = block.ErrNotSupported
				} else {
					err = im.writeZeroBuf(off, chunk)
				}
			}
		} else if whole && !im.hasBackingFile() {
			// Version 2 without a backing file: unallocated reads as
			// zeros, and a discard's unallocation is what QEMU's zero
			// write leaves too (no zero clusters on version 2).
			err = im.holdSectors(off, chunk, func() error {
				return im.zeroCluster(guestOff(off), true, discardZero, &fr)
			})
		} else if !im.g.ExtendedL2 && (im.ver.Load() >= 3 || !im.hasBackingFile()) && off+chunk <= int64(im.vsize.Load()) {
			// Part of a cluster: when the whole cluster reads as zeros
			// here (a zero cluster, or unallocated over no data), it
			// becomes a zero cluster, as QEMU's unaligned zero write
			// does: no cluster of zeros to allocate, and zeros for good
			// whatever the backing file holds later (a rebase). On
			// version 2 without a backing file an unallocated cluster
			// stays so (QEMU discards it). Else zero buffers. (Past the
			// size guests see, a resize zeroes bytes that read as zeros
			// only because they lie past it.)
			done := false
			err = im.holdSectors(off, chunk, func() error {
				var e error
				done, e = im.zeroIfReadsZero(guestOff(off), off, off+chunk, false, flags&block.MayUnmap != 0, &fr)
				return e
			})
			if err == nil && !done {
				if flags&block.Allocate != 0 {
					err = block.ErrNotSupported // never a fallback
				} else {
					err = im.writeZeroBuf(off, chunk)
				}
			}
		} else if im.g.ExtendedL2 {
			err = im.xzeroPartial(off, chunk, flags&block.Allocate != 0, &fr)
		} else {
			err = im.writeZeroBuf(off, chunk)
		}
		if err == nil && fr.full() {
			err = im.freeAfterWriters(&fr)
		}
		if errors.Is(err, block.ErrNotSupported) {
			// A refused Allocate (an edge that a write beside filled
			// since zeroEdgesIfZero, a compressed cluster): no I/O
			// failed, and the clusters zeroed before it have their new
			// entries; their old ones are freed, not leaked.
			if ferr := im.freeAfterWriters(&fr); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return im.freeAfterWriters(&fr)
}

// writeZeroBuf writes zero buffers over [off, off+n), inside one cluster.
// The shared zero buffer is smaller than the largest cluster (2 MiB), so
// the vector repeats it.
func (im *Image) writeZeroBuf(off, n int64) error {
	vp := getVec()
	defer putVec(vp)
	*vp = appendZeros(*vp, block.ZeroBuf(), uint64(n))
	if im.crypt != nil {
		return im.writevCrypt(off, *vp, n)
	}
	return im.writeCluster(guestOff(off), *vp, n)
}

// Discard frees the clusters wholly inside [off, off+n): they read as
// zeros afterwards. On v3 they become zero clusters, as in QEMU's
// discard_in_l2_slice: every one with a backing file, and without one
// every one that was allocated (one that was not stays unallocated); on
// v2 they become unallocated. On v2 with a backing file it leaves them,
// as QEMU does: without zero clusters the backing file's stale data
// would show. Partial clusters are left alone.
func (im *Image) Discard(off, n int64) error {
	return im.signal(im.discard(off, n))
}

func (im *Image) discard(off, n int64) error {
	tok := im.writers.enter() // Q18: before the size check
	defer im.writers.exit(tok)
	if err := im.checkWrite(off, n); err != nil || n == 0 {
		return err
	}
	im.markDirty(off, n)       // Q22: as QEMU, the range asked for
	defer im.markDirty(off, n) // Q22: and again once done (a bitmap cleared, added or enabled meanwhile)
	cs := int64(im.g.ClusterSize)
	end := (off + n) / cs
	if uint64(off+n) == im.hsize.Load() {
		end = (off + n + cs - 1) / cs
	}
	return im.discardClusters((off+cs-1)/cs, end, discardZero)
}

// discardKind says whether zeroCluster discards, and how.
type discardKind uint8

const (
	noDiscard   discardKind = iota // a zeroing (WriteZeroes)
	discardZero                    // Discard: reads zeros (or, on v2, the backing file)
	// discardFull: Shrink's, past the new end, where nothing is read:
	// unallocated, as QEMU's full discard, and no zero flag that a
	// downgrade would refuse (a growth zeroes what a backing file would
	// show: Q18). Never inferred from the size (a Shrink may be
	// refused, and its cut undone).
	discardFull
)

// discardClusters is Discard's work on the guest clusters [first, end).
func (im *Image) discardClusters(first, end int64, d discardKind) error {
	cs := int64(im.g.ClusterSize)
	fr := freeList{punch: true}
	defer im.release(&fr)
	for c := first; c < end; c++ {
		err := im.holdSectors(c*cs, cs, func() error {
			return im.zeroCluster(guestOff(c*cs), true, d, &fr)
		})
		if err != nil {
			return err
		}
		if fr.full() {
			if err := im.freeAfterWriters(&fr); err != nil {
				return err
			}
		}
	}
	return im.freeAfterWriters(&fr)
}

// errNoZeroClusters: the image became version 2 (SetVersion) after
// WriteZeroes chose zero clusters; it writes zeros instead.
var errNoZeroClusters = errors.New("qcow2: no zero clusters on version 2")

// freeList collects the old entries of clusters whose L2 entries were
// changed, to be freed once no request can still be writing into them
// or reading them (Q12). Batching makes one gate sync serve many clusters.
// Until then the entries still own their references: a list with
// entries is registered in Image.freeing, so Check counts them and does
// not repair them as leaks under the freer.
type freeList struct {
	// kept: a zeroing kept the host cluster of an entry that was
	// allocated (ZeroAlloc, DF2, or allocated subclusters whose zero
	// bits it set, xl2zero.go): a request that found the old entry
	// lock-free may still be writing into it (Q12).
	kept  bool
	es    []format.L2Entry
	df    []format.GuestOff // clusters that lost their data file allocation (DF7): nothing to free, a hole to punch
	punch bool              // the entries were dropped by a Discard or an unmapping zeroing: their space goes back to the host (punchFreed, dfPunch)
}

const freeBatch = 256

func (fr *freeList) full() bool { return len(fr.es)+len(fr.df) >= freeBatch }

// pendLocked adds the old entry e to fr (mu held).
func (im *Image) pendLocked(fr *freeList, e format.L2Entry) {
	if len(fr.es) == 0 {
		if im.freeing == nil {
			im.freeing = make(map[*freeList]struct{})
		}
		im.freeing[fr] = struct{}{}
	}
	fr.es = append(fr.es, e)
}

// releaseLocked empties fr (mu held): its entries were freed, or are
// left leaked (refcount too high), never freed under a request.
func (im *Image) releaseLocked(fr *freeList) {
	delete(im.freeing, fr)
	fr.es = fr.es[:0]
}

// release is deferred by the list's owner (without mu): entries left on
// an error path are leaked.
func (im *Image) release(fr *freeList) {
	if len(fr.es) == 0 { // written only by this goroutine
		return
	}
	im.mu.Lock()
	im.releaseLocked(fr)
	im.mu.Unlock()
}

// freeAfterWriters waits until no request (write or read) that found
// any of the collected clusters through its old entry is still in the
// data gate, then drops their references. The sync also ends the hold
// of clusters freed earlier without one (held.go).
func (im *Image) freeAfterWriters(fr *freeList) error {
	synced := false
	if fr.kept {
		// A write that found a kept cluster Normal lands before the
		// zeroing returns: once the zeroing is seen, nothing the write
		// left there may come back (a later write into the cluster
		// reuses it, zeroing it first, Q12).
		im.gate.sync()
		synced, fr.kept = true, false
	}
	if len(fr.es) == 0 && len(fr.df) == 0 {
		return nil
	}
	for _, e := range fr.es {
		if synced {
			break
		}
		// A ZeroAlloc entry was Normal until a zeroing kept its cluster
		// (zeroClusterLocked, without a sync): a request that found it
		// Normal may still be writing into it or reading it.
		if t := e.Type(); t == format.ClusterNormal || t == format.ClusterZeroAlloc {
			im.gate.sync() // Q12: lock-free users of the old entries are done
			synced = true
			break
		}
	}
	if len(fr.df) > 0 {
		if fr.punch && !im.opts.NoPassDiscard {
			if !synced {
				im.gate.sync() // Q12, as above: before the holes
			}
			im.dfPunch(fr) // DF7
		}
		fr.df = fr.df[:0]
	}
	if len(fr.es) == 0 {
		return nil
	}
	durable := false
	if fr.punch && !im.opts.NoPassDiscard {
		durable = im.punchFreed(fr)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	defer im.releaseLocked(fr)
	if err := im.writableLocked(); err != nil {
		return err // leaked, never freed under a writer
	}
	flushed := false // here, under mu: every change so far is durable
	if !durable && slices.ContainsFunc(fr.es, im.lastRefLocked) {
		// Q3: the changes are durable before the clusters they dropped
		// can be given out again, one flush per batch, as a punch does
		// (holding them instead until the next Flush would hold a whole
		// disk's worth of clusters for a large discard).
		if err := im.tablesDurableLocked(); err != nil {
			return err // leaked, never freed before the change is durable
		}
		durable, flushed = true, true
	}
	for _, e := range fr.es {
		if err := im.freeEntryLocked(e, true, durable); err != nil {
			return err
		}
	}
	im.releaseHeldLocked(flushed)
	return nil
}

// lastRefLocked reports whether the old entry e held the last reference
// to a whole host cluster (mu held).
func (im *Image) lastRefLocked(e format.L2Entry) bool {
	if t := e.Type(); t != format.ClusterNormal && t != format.ClusterZeroAlloc {
		return false
	}
	rc, err := im.refcount(im.g.HostCluster(e.Offset()))
	return err == nil && rc == 1
}

// zeroCluster turns the guest cluster of goff into a zero cluster (or, for a
// discard without the need to hide backing data, an unallocated one).
// The old entry, if it held a cluster, goes to fr: it is freed later,
// after writers that found it without the lock are done (Q12).
func (im *Image) zeroCluster(goff format.GuestOff, unmap bool, discard discardKind, fr *freeList) error {
	for {
		blocker, err := im.tryZeroCluster(goff, unmap, discard, fr)
		if blocker == nil {
			return err
		}
		blocker.Wait() // an allocation of the cluster is in flight (Q7)
	}
}

// zeroIfReadsZero makes the guest cluster of goff a zero cluster if the
// whole of it outside [p, q) (the zero write's part of it) reads as zeros
// now, and reports whether it is one (on
// version 2, without a backing file, an unallocated cluster: it stays
// so). It decides with the cluster registered (Q7) and mu held: a
// write into another part of the cluster, which must allocate it, is
// then either linked already (the cluster holds data: false) or waits.
// dry only decides: nothing changes. With unmap, a zero cluster that
// still holds its host cluster gives it up, as QEMU's widened zero write
// with MAY_UNMAP does (the cluster is then free for a compressed write).
func (im *Image) zeroIfReadsZero(goff format.GuestOff, p, q int64, dry, unmap bool, fr *freeList) (bool, error) {
	for {
		done, blocker, err := im.tryZeroIfReadsZero(goff, p, q, dry, unmap, fr)
		if blocker == nil {
			return done, err
		}
		blocker.Wait()
	}
}

func (im *Image) tryZeroIfReadsZero(goff format.GuestOff, p, q int64, dry, unmap bool, fr *freeList) (bool, *sched.Alloc[allocState], error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return false, nil, err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		return false, blocker, nil
	}
	defer im.allocs.Release(reg)
	e, err := im.entry(goff)
	if err != nil {
		return false, nil, err
	}
	cs := int64(im.g.ClusterSize)
	start := int64(im.g.GuestClusterOff(im.g.GuestCluster(goff)))
	zero, held := false, false
	switch im.kindOf(e) { // DF2: a data file's cluster at 0 is allocated
	case format.ClusterZeroPlain:
		zero = true
	case format.ClusterZeroAlloc:
		zero, held = true, true
	case format.ClusterUnallocated:
	default:
		return false, nil, nil
	}
	if !zero && im.ver.Load() < 3 {
		// No zero clusters: without a backing file an unallocated
		// cluster reads as zeros for good, and QEMU's zeroing of it
		// is a discard (nothing to do); with one, buffers.
		return !im.hasBackingFileLocked(), nil, nil
	}
	if !zero && !im.backingZeroAround(start, start+cs, p, q) {
		return false, nil, nil
	}
	if dry {
		return true, nil, nil
	}
	if im.zeroesRawEdges() {
		// A raw data file is zeroed over the whole cluster first, as
		// QEMU does (DF6): outside mu, the cluster still registered.
		im.mu.Unlock()
		err = im.dfZeroRawEdge(start, cs)
		im.mu.Lock()
		if err == nil {
			err = im.writableLocked()
		}
		if err != nil {
			return false, nil, err
		}
	}
	if zero && !(held && unmap) {
		return true, nil, nil
	}
	if err := im.zeroClusterLocked(goff, unmap, noDiscard, fr); err != nil {
		if errors.Is(err, errNoZeroClusters) { // downgraded meanwhile
			return false, nil, nil
		}
		return false, nil, err
	}
	return true, nil, nil
}

// backingZeroAround reports whether the backing file reads as zeros
// over [lo, hi) outside [p, q), which a zero write covers: QEMU's
// is_zero of an unaligned zero write's head and tail (mu held).
func (im *Image) backingZeroAround(lo, hi, p, q int64) bool {
	if im.backing == nil {
		return true
	}
	for _, r := range [][2]int64{{lo, p}, {q, hi}} {
		a, b := r[0], min(r[1], im.bsize)
		if a < b && (im.bzero == nil || !im.bzero.IsZeroFast(a, b-a)) {
			return false
		}
	}
	return true
}

// tryZeroCluster registers the guest cluster of goff (Q7) and changes its entry
// under mu, or returns the registration in its way, to wait for without
// mu.
func (im *Image) tryZeroCluster(goff format.GuestOff, unmap bool, discard discardKind, fr *freeList) (*sched.Alloc[allocState], error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil { // as beginAllocLocked
		return nil, err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		return blocker, nil
	}
	defer im.allocs.Release(reg) // before the unlock, as it was registered
	return nil, im.zeroClusterLocked(goff, unmap, discard, fr)
}

func (im *Image) zeroClusterLocked(goff format.GuestOff, unmap bool, d discardKind, fr *freeList) error {
	if im.g.ExtendedL2 {
		return im.xzeroClusterLocked(goff, unmap, d, fr)
	}
	discard := d != noDiscard
	e, err := im.entry(goff)
	if err != nil {
		return err
	}
	var ne format.L2Entry
	switch {
	case d == discardFull:
		ne = 0
	case discard && im.hdr.Version < 3 && im.hasBackingFileLocked():
		// As QEMU (qcow2_co_pdiscard's ENOTSUP, which its block layer
		// takes for done): without zero clusters the discard would
		// show the backing file's stale data. Discards are advisory.
		return nil
	case discard && im.hdr.Version < 3:
		ne = 0
	case discard && im.backing == nil && im.kindOf(e) == format.ClusterUnallocated:
		return nil
	case discard:
		// As QEMU (full_discard=false): a discarded allocated cluster
		// becomes a zero cluster on v3, so it never re-exposes backing
		// data.
		ne = format.L2Entry(format.OflagZero)
	case im.hdr.Version < 3:
		// A downgrade came between WriteZeroes' lock-free version
		// check and here: no zero clusters any more.
		return errNoZeroClusters
	case !unmap && im.kindOf(e) == format.ClusterNormal: // DF2
		// Keep the allocation, as QEMU's zero_in_l2_slice: also a
		// cluster a snapshot shares (COPIED clear), whose reference
		// stays (a later write copies it out, as for a Normal one).
		ne = format.MakeL2(e.Offset(), e.Copied(), true)
		fr.kept = e.Copied() // lock-free writes land only in COPIED clusters (Q12)
	case !unmap && e.Type() == format.ClusterZeroAlloc:
		return nil
	default:
		ne = format.L2Entry(format.OflagZero)
	}
	if ne == e {
		return nil
	}
	if im.kindOf(e) == format.ClusterUnallocated && ne == 0 {
		return nil
	}
	if ne != 0 || im.kindOf(e) != format.ClusterUnallocated {
		if err := im.ensureL2Locked(goff); err != nil {
			return err
		}
		if e, err = im.entry(goff); err != nil {
			return err
		}
	}
	if err := im.setEntry(goff, ne); err != nil {
		return err
	}
	if im.df.ext {
		im.dfDroppedLocked(fr, goff, e, ne) // not refcounted (DF3), a hole to punch (DF7)
		return nil
	}
	if format.L2Entry(ne).Type() == format.ClusterZeroAlloc {
		return nil // kept
	}
	switch e.Type() {
	case format.ClusterNormal, format.ClusterZeroAlloc, format.ClusterCompressed:
		im.pendLocked(fr, e)
	}
	return nil
}

// punchFreed gives the host space of fr's clusters back to the file
// system (a hole, or the device's discard), as QEMU does for a discard
// with pass-discard-request (Q21), before their references drop: only
// clusters that fr's entry is the last reference to (refcount 1; not
// compressed ones, whose host clusters hold others' data too). The gate
// has passed, so no request reads or writes them through the old
// entries, and fr still holds them, so no allocation takes them while
// the hole is made; and the L2 tables without the entries are written
// and flushed first, so no table on the media points into the hole,
// even after a crash (an encrypted cluster would read as garbage). Only on
// devices that zero efficiently (Caps: MayUnmap and Allocate), so that a
// refused punch never becomes a stream of zeros; best effort, an error
// leaves the space allocated as before. durable: it wrote the L2 tables
// and flushed, so fr's entries' changes are on the media (Q3).
func (im *Image) punchFreed(fr *freeList) (durable bool) {
	c := im.dev.Caps()
	if c.ZeroFlags&(block.MayUnmap|block.Allocate) != block.MayUnmap|block.Allocate {
		return false
	}
	cs := format.HostOff(im.g.ClusterSize)
	type hostRange struct{ off, end format.HostOff }
	var rs []hostRange
	im.mu.Lock()
	if im.writableLocked() != nil {
		im.mu.Unlock()
		return false
	}
	for _, e := range fr.es {
		if !im.lastRefLocked(e) {
			continue
		}
		if k := len(rs) - 1; k >= 0 && rs[k].end == e.Offset() {
			rs[k].end += cs
		} else {
			rs = append(rs, hostRange{e.Offset(), e.Offset() + cs})
		}
	}
	if len(rs) > 0 {
		if im.tablesDurableLocked() != nil {
			im.mu.Unlock()
			return false
		}
		durable = true
	}
	im.mu.Unlock()
	for _, r := range rs {
		if err := im.dev.WriteZeroes(int64(r.off), int64(r.end-r.off), block.MayUnmap); err != nil {
			return durable
		}
		im.c.punchedBytes.Add(int64(r.end - r.off))
	}
	return durable
}

// tablesDurableLocked writes the L2 tables and flushes the image file
// before a hole is punched (mu held): the L2 changes that dropped the
// entries are durable first, so no table on the media points into a
// hole, even after a crash.
func (im *Image) tablesDurableLocked() error {
	if err := im.l2c.Write(); err != nil {
		return err
	}
	return im.dev.Flush()
}

// hasBackingFileLocked reports whether the image has a backing file,
// opened or only named in the header (mu held).
func (im *Image) hasBackingFileLocked() bool { return im.backing != nil || im.hdr.BackingFile != "" }

func (im *Image) hasBackingFile() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.hasBackingFileLocked()
}
