package qcow2

import (
	"fmt"

	"github.com/qring/qring/internal/invariants"

	"github.com/qring/qring/qcow2/format"
)

// This file holds the allocator and refcount updates. Every function here
// runs with im.mu held; the ones the rest of the engine calls carry the
// Locked suffix.

// refcount returns the stored refcount of host cluster c (0 where no
// refcount block covers it).
func (im *Image) refcount(c uint64) (uint64, error) {
	ri, bi := im.g.RefIndex(c)
	if ri >= uint64(len(im.reftable)) || im.reftable[ri] == 0 {
		return 0, nil
	}
	t, err := im.rbc.Get(int64(im.reftable[ri]))
	if err != nil {
		return 0, err
	}
	v := format.GetRefcount(t.Data, im.g.RefcountOrder, bi)
	im.rbc.Put(t)
	return v, nil
}

// markDirtyBit sets the dirty bit durably before the first unordered
// refcount update with lazy refcounts (Q8).
func (im *Image) markDirtyBit() error {
	if !im.lazy || im.dirtySet {
		return nil
	}
	im.hdr.IncompatibleFeatures |= format.IncompatDirty
	if err := im.writeHeader(); err != nil {
		im.hdr.IncompatibleFeatures &^= format.IncompatDirty
		return err
	}
	if err := im.dev.Flush(); err != nil {
		return err
	}
	im.dirtySet = true
	return nil
}

// updateRefcountLocked adds delta to the refcount of cluster c. A missing
// refcount block (for increments) returns errRetry after creating one,
// because the new block may occupy the cluster the caller wanted.
func (im *Image) updateRefcountLocked(c uint64, delta int64) error {
	ri, bi := im.g.RefIndex(c)
	if ri >= uint64(len(im.reftable)) || im.reftable[ri] == 0 {
		if delta < 0 {
			return im.markCorrupt(corruptf("refcount", c, "freeing cluster %d that has no refcount block", c))
		}
		if err := im.ensureRefblock(ri); err != nil {
			return err
		}
		return errRetry
	}
	t, err := im.rbc.Get(int64(im.reftable[ri]))
	if err != nil {
		return err
	}
	t.Lock() // write-back may snapshot this block from another goroutine
	v := format.GetRefcount(t.Data, im.g.RefcountOrder, bi)
	nv := uint64(int64(v) + delta)
	under := delta < 0 && uint64(-delta) > v
	over := delta > 0 && (nv > im.g.RefcountMax || nv < v)
	if !under && !over {
		format.SetRefcount(t.Data, im.g.RefcountOrder, bi, nv)
	}
	t.Unlock()
	switch {
	case under:
		im.rbc.Put(t)
		return im.markCorrupt(corruptf("refcount", c, "refcount %d of cluster %d %+d out of range", v, c, delta))
	case over:
		// A limit of the image's refcount width, not damage (QEMU's
		// -ERANGE): nothing changed.
		im.rbc.Put(t)
		return fmt.Errorf("%w: cluster %d (refcount %d, at most %d)", ErrRefcountOverflow, c, v, im.g.RefcountMax)
	}
	im.rbc.MarkDirty(t)
	im.rbc.Put(t)
	if nv == 0 {
		if c < im.freeIdx {
			im.freeIdx = c
		}
		if im.compFree != 0 && im.g.HostCluster(im.compFree) == c {
			im.compFree = 0 // the cluster may be handed out whole now (Q13)
		}
		// Any cached table in the freed cluster is gone. Discard first:
		// it waits for a write-back in flight (an eviction from a
		// lock-free lookup), whose overlap check must still find the
		// role; once discarded, nothing writes the table.
		off := im.g.HostClusterOff(c)
		for s := uint64(0); s < im.g.ClusterSize; s += im.sliceSize {
			im.l2c.Discard(int64(off) + int64(s))
		}
		im.meta.del(c)
	}
	return nil
}

// findFree returns the first run of n free clusters at or after freeIdx,
// scanning refcount blocks directly (no per-cluster cache lookups).
func (im *Image) findFree(n uint64) (uint64, error) {
	g := &im.g
	start := im.freeIdx
	run := uint64(0)
	limit := uint64(1) << (62 - g.ClusterBits)
	for c := start; c < limit; {
		ri, bi := g.RefIndex(c)
		blockEnd := (ri + 1) << g.RefblockBits
		if ri >= uint64(len(im.reftable)) || im.reftable[ri] == 0 {
			if !im.heldIn(c, blockEnd) {
				// The whole uncovered block range is free.
				if run == 0 {
					start = c
				}
				run += blockEnd - c
				if run >= n {
					return start, nil
				}
				c = blockEnd
				continue
			}
			// Counted 0 but held (Q12): a rebuild (rebuild.go) gives
			// no block to a range whose counts are all 0, held
			// clusters included.
			for ; c < blockEnd; c++ {
				if im.isHeld(c) {
					run = 0
					continue
				}
				if run == 0 {
					start = c
				}
				if run++; run >= n {
					return start, nil
				}
			}
			continue
		}
		t, err := im.rbc.Get(int64(im.reftable[ri]))
		if err != nil {
			return 0, err
		}
		t.Lock()
		for ; bi < g.RefblockEntries; bi, c = bi+1, c+1 {
			if format.GetRefcount(t.Data, g.RefcountOrder, bi) != 0 || (len(im.held) != 0 && im.isHeld(c)) {
				run = 0 // in use, or held (Q12, Q13)
				continue
			}
			if run == 0 {
				start = c
			}
			run++
			if run >= n {
				break
			}
		}
		t.Unlock()
		im.rbc.Put(t)
		if run >= n {
			return start, nil
		}
	}
	return 0, fmt.Errorf("%w: image file would exceed 2^62 bytes", ErrUnsupported)
}

// allocClustersLocked allocates n contiguous clusters with refcount 1 and
// returns the host offset of the first; fresh reports whether they lie
// at or past the high-water mark (never used since open: a hole, Q2).
func (im *Image) allocClustersLocked(n uint64) (off format.HostOff, fresh bool, err error) {
	if err := im.markDirtyBit(); err != nil {
		return 0, false, err
	}
	for tries := 0; ; tries++ {
		if tries > 64 {
			return 0, false, fmt.Errorf("qcow2: allocation did not converge")
		}
		c, err := im.findFree(n)
		if err != nil {
			return 0, false, err
		}
		// Refcount blocks must exist for the whole run before any
		// increment, so that a retry never leaves a partial run.
		retry := false
		for k := uint64(0); k < n; k++ {
			ri, _ := im.g.RefIndex(c + k)
			if ri >= uint64(len(im.reftable)) || im.reftable[ri] == 0 {
				if err := im.ensureRefblock(ri); err != nil {
					return 0, false, err
				}
				retry = true
				break
			}
		}
		if retry {
			continue
		}
		// SP1, Q11: the run's space is ours; fresh if never used since
		// open and inside the reserve (a hole past EOF reads as zeros
		// too, but writing only 4 KiB into it makes every write extend
		// the file, which filesystems serialise (ext4 punts such direct
		// writes to io-wq): those clusters get one zeroing request that
		// extends the file instead, as QEMU does).
		off = im.g.HostClusterOff(c)
		fresh = im.takeSpace(off, im.g.HostClusterOff(c+n))
		for k := uint64(0); k < n; k++ {
			if err := im.updateRefcountLocked(c+k, 1); err != nil {
				for j := uint64(0); j < k; j++ {
					im.updateRefcountLocked(c+j, -1)
				}
				return 0, false, err
			}
		}
		if invariants.Enabled {
			for k := uint64(0); k < n; k++ {
				rc, err := im.refcount(c + k)
				if err := invariants.Assertf(err == nil && rc == 1, "allocated cluster %d has refcount %d (%v)", c+k, rc, err); err != nil {
					return 0, false, err
				}
			}
		}
		im.freeIdx = c + n
		if err := im.overlapCheckNew(off, n<<im.g.ClusterBits); err != nil {
			return 0, false, err
		}
		return off, fresh, nil
	}
}

// freeClustersLocked drops one reference to each of n clusters at off.
func (im *Image) freeClustersLocked(off format.HostOff, n uint64) error {
	c := im.g.HostCluster(off)
	for k := uint64(0); k < n; k++ {
		if err := im.updateRefcountLocked(c+k, -1); err != nil {
			return err
		}
	}
	return nil
}

// ensureRefblock creates the refcount block for reftable index ri. The new
// block describes itself when it falls in its own range; otherwise its
// cluster is counted in an existing block. It is written and flushed
// before the refcount table points at it (Q4).
func (im *Image) ensureRefblock(ri uint64) error {
	if ri >= uint64(len(im.reftable)) {
		return im.growReftable(ri)
	}
	// The block goes to the first free cluster.
	b, err := im.findFree(1)
	if err != nil {
		return err
	}
	bri, bbi := im.g.RefIndex(b)
	boff := im.g.HostClusterOff(b)
	if err := im.overlapCheckNew(boff, im.g.ClusterSize); err != nil {
		return err
	}
	im.takeSpace(boff, boff+format.HostOff(im.g.ClusterSize)) // SP1
	if bri == ri {
		// Self-describing.
		t, err := im.rbc.GetEmpty(int64(boff))
		if err != nil {
			return err
		}
		// The role before the block is dirty: a write-back of the
		// refcount cache (an L2 eviction's dependency flush) may run
		// from now on, and its overlap check wants the role.
		im.meta.set(b, metaRefblock)
		t.Lock()
		format.SetRefcount(t.Data, im.g.RefcountOrder, bbi, 1)
		t.Unlock()
		im.rbc.MarkDirty(t)
		im.rbc.Put(t)
	} else {
		if bri >= uint64(len(im.reftable)) || im.reftable[bri] == 0 {
			// Its own range needs a block first; that one will be
			// self-describing at b.
			return im.ensureRefblock(bri)
		}
		if err := im.updateRefcountLocked(b, 1); err != nil {
			return err
		}
		t, err := im.rbc.GetEmpty(int64(boff))
		if err != nil {
			return err
		}
		im.meta.set(b, metaRefblock) // as above
		im.rbc.MarkDirty(t)
		im.rbc.Put(t)
	}
	// Until the table names it, a failure leaves the block unnamed: one
	// counted only in itself is free again (memory sees its range
	// uncovered), so neither its role nor its cache entry may stay to
	// flag data allocated there as an overlap; one counted elsewhere
	// leaks.
	undo := func(err error) error {
		if bri == ri {
			im.rbc.Discard(int64(boff))
			im.meta.del(b)
		}
		return err
	}
	// Q4: the block (and the count of its own cluster) is durable before
	// the table entry.
	if err := im.rbc.Flush(); err != nil {
		return undo(err)
	}
	im.event(EvRefblock)
	im.reftable[ri] = boff
	if err := im.writeReftableEntry(ri); err != nil {
		im.reftable[ri] = 0
		if mayHaveLanded(err) {
			// The media may name the block for this range while memory
			// does not (Q4): refuse writes until the image is reopened.
			im.loseWritesLocked(err)
			return err
		}
		return undo(err)
	}
	// Q1: increments in the new block count only once the entry is
	// durable; links are ordered after refcount flushes, so flush now.
	// If it fails, the media may not name the block memory counts in
	// (Q4).
	if err := im.dev.Flush(); err != nil {
		im.loseWritesLocked(err)
		return err
	}
	im.c.refblocksAllocated.Add(1)
	return nil
}
