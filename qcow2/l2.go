package qcow2

import (
	"sync/atomic"

	"github.com/qring/qring/cache"
	"github.com/qring/qring/qcow2/format"
)

// L2 access. Lookups (l2slice, entry) are safe without im.mu: the L1 is
// read atomically and an entry is read under its table's lock. Every
// writer of L2 table data holds im.mu and the table's lock.

// l2slice returns the pinned cache slice holding the entry of guest
// cluster gc and the entry's byte offset within it; t is nil when the L1
// entry is unallocated (or gc is past the L1 table).
func (im *Image) l2slice(gc uint64) (t *cache.Table, at uint64, err error) {
	l1i := gc >> im.g.L2Bits
	l1 := *im.l1p.Load()
	if l1i >= uint64(len(l1)) {
		return nil, 0, nil
	}
	l2off := atomic.LoadUint64(&l1[l1i]) & format.L1OffsetMask
	if l2off == 0 {
		return nil, 0, nil
	}
	byteOff := (gc & (im.g.L2Entries - 1)) * im.g.L2EntrySize
	sliceOff := l2off + byteOff/im.sliceSize*im.sliceSize
	t, err = im.l2c.Get(int64(sliceOff))
	if err != nil {
		return nil, 0, err
	}
	return t, byteOff % im.sliceSize, nil
}

// entry returns the validated L2 entry of guest cluster gc.
func (im *Image) entry(gc uint64) (format.L2Entry, error) {
	t, at, err := im.l2slice(gc)
	if err != nil || t == nil {
		return 0, err
	}
	t.Lock()
	e := format.L2Entry(be.Uint64(t.Data[at:]))
	t.Unlock()
	im.l2c.Put(t)
	if err := im.validEntry(e); err != nil {
		return 0, err
	}
	return e, nil
}

func (im *Image) validEntry(e format.L2Entry) error {
	if err := e.Validate(&im.g, im.hdr.Version); err != nil {
		return err
	}
	return nil
}

// setEntry stores e for guest cluster gc; the L2 table must exist and be
// writable (ensureL2Locked). The slice is marked dirty before anything that may
// flush (Q3).
func (im *Image) setEntry(gc uint64, e format.L2Entry) error {
	t, at, err := im.l2slice(gc)
	if err != nil {
		return err
	}
	if t == nil {
		return corruptf("l1_entry", gc>>im.g.L2Bits, "L2 table vanished")
	}
	t.Lock()
	be.PutUint64(t.Data[at:], uint64(e))
	t.Unlock()
	im.l2c.MarkDirty(t)
	im.l2c.Put(t)
	return nil
}

// ensureL2Locked makes the L2 table for guest cluster gc exist with COPIED set
// in the L1 (QEMU's l2_allocate): allocate a cluster, make its refcount
// durable (Q1), write the table (zeros, or a copy of a shared table) and
// flush it, then write the L1 entry (Q4).
func (im *Image) ensureL2Locked(gc uint64) error {
	l1i := gc >> im.g.L2Bits
	if l1i >= uint64(len(im.l1)) {
		return ErrOutOfRange
	}
	old := format.L1Entry(im.l1[l1i])
	if old.Offset() != 0 && old.Copied() {
		return nil
	}
	g := &im.g
	off, _, err := im.allocClustersLocked(1)
	if err != nil {
		return err
	}
	im.meta.set(off>>g.ClusterBits, metaL2)
	if !im.lazy {
		if err := im.rbc.Flush(); err != nil {
			return im.abortL2(off, err)
		}
	}
	for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
		nt, err := im.l2c.GetEmpty(int64(off + s))
		if err != nil {
			return im.abortL2(off, err)
		}
		if old.Offset() != 0 {
			// COW of a table shared with a snapshot: the entries keep
			// their clusters (whose refcounts already count both
			// tables) and lose COPIED, which they lack already.
			ot, err := im.l2c.Get(int64(uint64(old.Offset()) + s))
			if err != nil {
				im.l2c.Put(nt)
				return im.abortL2(off, err)
			}
			ot.Lock()
			nt.Lock()
			copy(nt.Data, ot.Data)
			nt.Unlock()
			ot.Unlock()
			im.l2c.Put(ot)
		}
		im.l2c.MarkDirty(nt)
		im.l2c.Put(nt)
	}
	if err := im.l2c.Flush(); err != nil {
		return im.abortL2(off, err)
	}
	im.event(EvL2)
	atomic.StoreUint64(&im.l1[l1i], uint64(format.MakeL1(format.HostOff(off), true)))
	if err := im.writeTableEntry(uint64(im.hdr.L1TableOffset), im.l1, l1i); err != nil {
		atomic.StoreUint64(&im.l1[l1i], uint64(old))
		return im.abortL2(off, err)
	}
	im.c.l2TablesAllocated.Add(1)
	if old.Offset() != 0 {
		// Q3: the L1 no longer points at the old table; make that
		// durable before its refcount drops.
		if err := im.dev.Flush(); err != nil {
			return err
		}
		if err := im.freeClustersLocked(uint64(old.Offset()), 1); err != nil {
			return err
		}
	}
	return nil
}

func (im *Image) abortL2(off uint64, err error) error {
	for s := uint64(0); s < im.g.ClusterSize; s += im.sliceSize {
		im.l2c.Discard(int64(off + s))
	}
	im.meta.del(off >> im.g.ClusterBits)
	im.freeClustersLocked(off, 1)
	return err
}
