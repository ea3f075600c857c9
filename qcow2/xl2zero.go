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
// read as zeros: its whole subclusters through the bitmap. A partial
// subcluster at an edge becomes a zero subcluster when it is unallocated
// or zero and reads as zeros outside the range (xzeroSubIfReadsZero, as
// QEMU's qcow2_co_pwrite_zeroes with its head and tail); else, and in a
// compressed cluster, zero
// buffers, which noFallback (Allocate) refuses. Subclusters that were
// allocated keep their host bytes: fr.kept, so that the caller's
// freeAfterWriters waits for the writes that found them allocated (Q12).
func (im *Image) xzeroPartial(off, n int64, noFallback bool, fr *freeList) error {
	scs := int64(im.g.SubclusterSize())
	end := off + n
	a := (off + scs - 1) / scs * scs
	b := end / scs * scs
	if uint64(end) == im.hsize.Load() {
		b = end
	}
	if a > off {
		if err := im.xzeroEdge(off, min(a, end), noFallback, fr); err != nil {
			return err
		}
	}
	if a < b {
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
	}
	if t := max(a, b); t < end {
		return im.xzeroEdge(t, end, noFallback, fr)
	}
	return nil
}

// xzeroEdge zeroes [p, q), part of one subcluster: the whole subcluster
// when the rest of it reads as zeros (inside the size guests see: a resize zeroes
// bytes that read as zeros only because they lie past it), else zero
// buffers, which noFallback refuses.
func (im *Image) xzeroEdge(p, q int64, noFallback bool, fr *freeList) error {
	if q <= int64(im.vsize.Load()) {
		done, err := im.xzeroSubIfReadsZero(p, q, false, fr)
		if err != nil || done {
			return err
		}
	}
	if noFallback {
		return block.ErrNotSupported
	}
	return im.writeZeroBuf(p, q-p)
}

// xzeroEdgesIfZero is zeroEdgesIfZero for extended L2: the partial
// subclusters at the edges of [off, off+n) become zero subclusters if
// each reads as zeros outside the range, else ErrNotSupported (Allocate:
// before anything else, and with two edges both checked before either
// changes, so that a refusal changes nothing the guest sees).
func (im *Image) xzeroEdgesIfZero(off, n int64) error {
	scs := int64(im.g.SubclusterSize())
	end := off + n
	var edges [][2]int64
	if off%scs != 0 {
		edges = append(edges, [2]int64{off, min(end, (off/scs+1)*scs)})
	}
	if end%scs != 0 && uint64(end) != im.hsize.Load() && (len(edges) == 0 || (end-1)/scs != off/scs) {
		edges = append(edges, [2]int64{end / scs * scs, end})
	}
	fr := freeList{}
	defer im.release(&fr)
	pass := func(dry bool) error {
		for _, e := range edges {
			if e[1] > int64(im.vsize.Load()) {
				return block.ErrNotSupported
			}
			done, err := im.xzeroSubIfReadsZero(e[0], e[1], dry, &fr)
			if err != nil {
				return err
			}
			if !done {
				return block.ErrNotSupported
			}
		}
		return nil
	}
	if len(edges) > 1 { // as zeroEdgesIfZero: both checked first
		if err := pass(true); err != nil {
			return err
		}
	}
	if err := pass(false); err != nil {
		return err
	}
	return im.freeAfterWriters(&fr)
}

// xzeroSubIfReadsZero makes the subcluster holding [p, q) a zero
// subcluster if it reads as zeros outside [p, q) and is unallocated or
// zero already (QEMU's check of an unaligned zero write's head and
// tail), and reports whether it is one. As zeroIfReadsZero, it decides
// with the guest cluster registered (Q7) and mu held; dry only decides.
func (im *Image) xzeroSubIfReadsZero(p, q int64, dry bool, fr *freeList) (done bool, err error) {
	scs := int64(im.g.SubclusterSize())
	s := p / scs * scs
	err = im.holdSectors(s, min(scs, int64(im.hsize.Load())-s), func() error {
		for {
			blocker, d, err := im.tryZeroSubIfReadsZero(s, p, q, dry, fr)
			if blocker == nil {
				done = d
				return err
			}
			blocker.Wait() // an allocation of the cluster is in flight (Q7)
		}
	})
	return done, err
}

func (im *Image) tryZeroSubIfReadsZero(s, p, q int64, dry bool, fr *freeList) (*sched.Alloc[allocState], bool, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return nil, false, err
	}
	goff := guestOff(s)
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		return blocker, false, nil
	}
	defer im.allocs.Release(reg)
	e, bm, err := im.xentry(goff)
	if err != nil || e.Compressed() {
		return nil, false, err
	}
	i := im.g.SubIndex(im.g.InCluster(goff))
	scs := int64(im.g.SubclusterSize())
	zero := bm&format.SubZeroRange(i, i+1) != 0
	switch {
	case zero:
	case bm&format.SubAllocRange(i, i+1) != 0:
		return nil, false, nil
	case !im.backingZeroAround(s, s+scs, p, q):
		return nil, false, nil
	}
	if dry {
		return nil, true, nil
	}
	if im.zeroesRawEdges() {
		// A raw data file is zeroed over the whole subcluster first,
		// as QEMU does (DF6): outside mu, the cluster still registered.
		im.mu.Unlock()
		err = im.dfZeroRawEdge(s, scs)
		im.mu.Lock()
		if err == nil {
			err = im.writableLocked()
		}
		if err != nil {
			return nil, false, err
		}
	}
	if zero {
		return nil, true, nil
	}
	done, err := im.zeroSubclustersLocked(goff, scs, fr)
	return nil, done, err
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
	done, err := im.zeroSubclustersLocked(goff, n, fr)
	return nil, done, err
}

// zeroSubclustersLocked is tryZeroSubclusters' work, with mu held and
// the guest cluster registered (Q7).
func (im *Image) zeroSubclustersLocked(goff format.GuestOff, n int64, fr *freeList) (bool, error) {
	e, bm, err := im.xentry(goff)
	if err != nil || e.Compressed() {
		return false, err
	}
	in := im.g.InCluster(goff)
	first := im.g.SubIndex(in)
	end := im.g.SubIndex(in+uint64(n)-1) + 1
	nbm := (bm | format.SubZeroRange(first, end)) &^ format.SubAllocRange(first, end)
	if nbm == bm {
		return true, nil
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return false, err
	}
	if e, bm, err = im.xentry(goff); err != nil || e.Compressed() {
		return false, err
	}
	nbm = (bm | format.SubZeroRange(first, end)) &^ format.SubAllocRange(first, end)
	if err := im.setXEntry(goff, e, nbm); err != nil {
		return false, err
	}
	if bm&format.SubAllocRange(first, end) != 0 {
		fr.kept = true // lock-free writes may still land in them (Q12)
	}
	return true, nil
}
