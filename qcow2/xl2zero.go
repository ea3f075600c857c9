package qcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// Zero writes and discards on extended-L2 images, as QEMU's
// zero_in_l2_slice, zero_l2_subclusters and discard_in_l2_slice do:
// whole clusters get every zero bit set (their host cluster kept unless
// the request may unmap, or it is compressed), whole subclusters of a
// partial cluster get their zero bits set and allocation bits cleared
// (the host cluster keeps its bytes, unused), and bytes in partial
// subclusters are written as zero buffers.

// xzeroClusterLocked is zeroClusterLocked for extended L2 (mu held, the
// guest cluster registered, Q7).
func (im *Image) xzeroClusterLocked(goff format.GuestOff, unmap bool, d discardKind, fr *freeList) error {
	e, bm, err := im.xentry(goff)
	if err != nil {
		return err
	}
	discard, full := d != noDiscard, d == discardFull
	ne, nbm, _ := xzeroEntry(e, bm, im.df.ext, unmap, discard, full, im.backing != nil)
	if ne == e && nbm == bm {
		return nil
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return err
	}
	// ensureL2Locked may have copied a shared table: decide again.
	if e, bm, err = im.xentry(goff); err != nil {
		return err
	}
	ne, nbm, free := xzeroEntry(e, bm, im.df.ext, unmap, discard, full, im.backing != nil)
	if ne == e && nbm == bm {
		return nil
	}
	if err := im.setXEntry(goff, ne, nbm); err != nil {
		return err
	}
	allocated := e.Offset() != 0 || e.AllocatedAtZero(im.df.ext) // DF2
	if !free && allocated && !e.Compressed() && ne.Offset() == e.Offset() {
		fr.kept = true // the host cluster kept: see freeList
	}
	switch {
	case im.df.ext: // a data file's clusters are not refcounted (DF3)
		im.dfDroppedLocked(fr, goff, e, ne) // a hole to punch (DF7)
	case free:
		im.pendLocked(fr, e) // freed after the requests (Q12, Q3)
	}
	return nil
}

// xzeroEntry is the new entry of a whole cluster zeroed (discard false)
// or discarded, and whether the old entry's cluster is to be freed.
// Zeroing keeps the host cluster unless it is compressed or the request
// may unmap; a discard drops it and makes the cluster read as zeros,
// unless the cluster reads as zeros already without a backing file; a
// full discard leaves it unallocated. external: the image has a data
// file (DF2: an entry allocated at host offset 0 is allocated).
func xzeroEntry(e format.L2Entry, bm uint64, external, unmap, discard, full, backing bool) (format.L2Entry, uint64, bool) {
	allocated := e.Offset() != 0 || e.Compressed() || e.AllocatedAtZero(external)
	if full {
		return 0, 0, allocated
	}
	if discard {
		if !backing && !allocated {
			return e, bm, false
		}
		return 0, format.SubZeroAll, allocated
	}
	if e.Compressed() || (unmap && allocated) {
		return 0, format.SubZeroAll, allocated
	}
	return e, format.SubZeroAll, false
}

// xzeroPartial makes [off, off+n) (inside one cluster, not all of it)
// read as zeros: its whole subclusters through the bitmap, the rest
// (and everything, in a compressed cluster) with zero buffers, which
// noFallback (Allocate: WriteZeroes checked the alignment) refuses.
// Subclusters that were allocated keep their host bytes: fr.kept, so
// that the caller's freeAfterWriters waits for the writes that found
// them allocated (Q12).
func (im *Image) xzeroPartial(off, n int64, noFallback bool, fr *freeList) error {
	scs := int64(im.g.SubclusterSize())
	a := (off + scs - 1) / scs * scs
	b := (off + n) / scs * scs
	if uint64(off+n) == im.hsize.Load() {
		b = off + n
	}
	if a >= b {
		return im.writeZeroBuf(off, n)
	}
	if a > off {
		if err := im.writeZeroBuf(off, a-off); err != nil {
			return err
		}
	}
	var done bool
	err := im.holdSectors(a, b-a, func() (err error) {
		done, err = im.xzeroSubclusters(guestOff(a), b-a, fr)
		return err
	})
	if err != nil {
		return err
	}
	if !done {
		if noFallback {
			return block.ErrNotSupported
		}
		if err := im.writeZeroBuf(a, b-a); err != nil {
			return err
		}
	}
	if b < off+n {
		return im.writeZeroBuf(b, off+n-b)
	}
	return nil
}

// xzeroSubclusters sets the zero bits and clears the allocation bits of
// the subclusters of [goff, goff+n) (QEMU zero_l2_subclusters); done is
// false for a compressed cluster, which the caller zeroes with buffers.
func (im *Image) xzeroSubclusters(goff format.GuestOff, n int64, fr *freeList) (done bool, err error) {
	for {
		blocker, done, err := im.tryZeroSubclusters(goff, n, fr)
		if blocker == nil {
			return done, err
		}
		blocker.Wait() // an allocation of the cluster is in flight (Q7)
	}
}

func (im *Image) tryZeroSubclusters(goff format.GuestOff, n int64, fr *freeList) (*sched.Alloc[allocState], bool, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil { // as beginAllocLocked
		return nil, false, err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		return blocker, false, nil
	}
	defer im.allocs.Release(reg)
	e, bm, err := im.xentry(goff)
	if err != nil || e.Compressed() {
		return nil, false, err
	}
	in := im.g.InCluster(goff)
	first := im.g.SubIndex(in)
	end := im.g.SubIndex(in+uint64(n)-1) + 1
	nbm := (bm | format.SubZeroRange(first, end)) &^ format.SubAllocRange(first, end)
	if nbm == bm {
		return nil, true, nil
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return nil, false, err
	}
	if e, bm, err = im.xentry(goff); err != nil || e.Compressed() {
		return nil, false, err
	}
	nbm = (bm | format.SubZeroRange(first, end)) &^ format.SubAllocRange(first, end)
	if err := im.setXEntry(goff, e, nbm); err != nil {
		return nil, false, err
	}
	if bm&format.SubAllocRange(first, end) != 0 {
		fr.kept = true // lock-free writes may still land in them (Q12)
	}
	return nil, true, nil
}
