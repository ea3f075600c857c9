package qcow2

import (
	"errors"

	"github.com/qring/qring/cache"
	"github.com/qring/qring/qcow2/format"
)

// L2 access. Lookups (l2slice, entry) are safe without im.mu: the L1 is
// read atomically and an entry is read under its table's lock. Every
// writer of L2 table data holds im.mu and the table's lock.

// l2slice returns the pinned cache slice holding the L2 entry of guest
// offset o and the entry's index within it; t is nil when the L1 entry
// is unallocated (or o is past the L1 table).
func (im *Image) l2slice(o format.GuestOff) (t *cache.Table, i uint64, err error) {
	g := &im.g
	l1i := g.L1Index(o)
	l1 := im.l1.Load()
	if l1i >= l1.size() {
		return nil, 0, nil
	}
	le := l1.load(l1i)
	l2off := le.Offset()
	if l2off == 0 {
		return nil, 0, nil
	}
	if err := im.damagedL1(l1i, le); err != nil {
		return nil, 0, err
	}
	perSlice := im.sliceSize / g.L2EntrySize
	l2i := g.L2Index(o)
	sliceOff := l2off + format.HostOff(l2i/perSlice*im.sliceSize)
	t, err = im.l2c.Get(int64(sliceOff))
	if err != nil {
		return nil, 0, err
	}
	return t, l2i % perSlice, nil
}

// peekEntry is entry for a caller that must not block (a Queue's owner,
// Q14): ok is false when the L2 slice is not in the cache (it is never
// read, nor anything written back, to find it) or the entry is not
// valid (the synchronous path reports that).
func (im *Image) peekEntry(o format.GuestOff) (e format.L2Entry, ok bool) {
	e, _, ok = im.peekXEntry(o)
	return e, ok
}

// peekXEntry is peekEntry with the subcluster bitmap (xentry), 0 without
// extended L2; ok is false for an invalid bitmap too.
func (im *Image) peekXEntry(o format.GuestOff) (e format.L2Entry, bm uint64, ok bool) {
	g := &im.g
	l1i := g.L1Index(o)
	l1 := im.l1.Load()
	if l1i >= l1.size() {
		return 0, 0, true
	}
	le := l1.load(l1i)
	l2off := le.Offset()
	if l2off == 0 {
		return 0, 0, true
	}
	if im.damagedL1(l1i, le) != nil {
		return 0, 0, false
	}
	perSlice := im.sliceSize / g.L2EntrySize
	l2i := g.L2Index(o)
	t := im.l2c.Peek(int64(l2off + format.HostOff(l2i/perSlice*im.sliceSize)))
	if t == nil {
		return 0, 0, false
	}
	t.Lock()
	e = g.L2At(t.Data, l2i%perSlice)
	bm = g.BitmapAt(t.Data, l2i%perSlice)
	t.Unlock()
	im.l2c.Put(t)
	if im.validEntry(e) != nil || format.ValidateBitmapIn(e, bm, im.df.ext) != nil {
		return 0, 0, false
	}
	return e, bm, true
}

// entry returns the validated L2 entry of guest offset o.
func (im *Image) entry(o format.GuestOff) (format.L2Entry, error) {
	e, err := im.rawEntry(o)
	if err != nil {
		return 0, err
	}
	if err := im.validEntry(e); err != nil {
		return 0, err
	}
	return e, nil
}

// readEntry is entry for a lookup that only reads (mapRun): reserved
// bits are masked off (readableEntry).
func (im *Image) readEntry(o format.GuestOff) (format.L2Entry, error) {
	e, err := im.rawEntry(o)
	if err != nil {
		return 0, err
	}
	if e, err = im.readableEntry(e); err != nil {
		return 0, err
	}
	return e, im.checkExternal(o, e)
}

// rawEntry is the L2 entry of guest offset o as stored, not validated
// (0 where no L2 table exists).
func (im *Image) rawEntry(o format.GuestOff) (format.L2Entry, error) {
	t, i, err := im.l2slice(o)
	if err != nil || t == nil {
		return 0, err
	}
	t.Lock()
	e := im.g.L2At(t.Data, i)
	t.Unlock()
	im.l2c.Put(t)
	return e, nil
}

// xentry returns the validated extended L2 entry of guest offset o: its
// first word and its subcluster bitmap (FM5: a bitmap QEMU's check calls
// corrupt is an error here too). Without extended L2 the bitmap is 0.
func (im *Image) xentry(o format.GuestOff) (format.L2Entry, uint64, error) {
	return im.xentryFor(o, false)
}

// xentryFor is xentry; read is for a lookup that only reads (xmapRun):
// reserved bits are masked off (readableEntry).
func (im *Image) xentryFor(o format.GuestOff, read bool) (format.L2Entry, uint64, error) {
	t, i, err := im.l2slice(o)
	if err != nil || t == nil {
		return 0, 0, err
	}
	t.Lock()
	e := im.g.L2At(t.Data, i)
	bm := im.g.BitmapAt(t.Data, i)
	t.Unlock()
	im.l2c.Put(t)
	if read {
		e, err = im.readableEntry(e)
	} else {
		err = im.validEntry(e)
	}
	if err == nil {
		err = im.checkExternal(o, e)
	}
	if err != nil {
		return 0, 0, err
	}
	if err := format.ValidateBitmapIn(e, bm, im.df.ext); err != nil {
		if !e.Compressed() {
			// A subcluster both allocated and zero, or allocated in
			// an unallocated cluster: QEMU's "Invalid cluster entry".
			err = &fatalEntryError{err}
		}
		return 0, 0, err
	}
	return e, bm, nil
}

// validEntry is e's Validate. A host offset that is not cluster aligned
// is a fatalEntryError, as QEMU's lookups signal it.
func (im *Image) validEntry(e format.L2Entry) error {
	err := e.Validate(&im.g, im.ver.Load())
	if err != nil && !e.Compressed() && !im.g.Aligned(e.Offset()) {
		return &fatalEntryError{err}
	}
	return err
}

// readableEntry is e as a read takes it (Q20): an entry whose only
// defect is reserved bits is read with them masked off, and a compressed
// one with COPIED set without it, as QEMU reads them (its check reports
// the bits; writes through the entry stay refused here); any other
// defect is validEntry's error.
func (im *Image) readableEntry(e format.L2Entry) (format.L2Entry, error) {
	err := im.validEntry(e)
	if err == nil {
		return e, nil
	}
	if e.Compressed() {
		// QEMU takes a compressed cluster's offset and size from the
		// bits under COPIED and the compressed flag.
		if m := e &^ format.OflagCopied; m != e && im.validEntry(m) == nil {
			return m, nil
		}
		return e, err
	}
	if m := e &^ format.L2ReservedMask; m != e && im.validEntry(m) == nil {
		return m, nil
	}
	return 0, err
}

// setEntry stores e as the L2 entry of guest offset o; the L2 table must
// exist and be writable (ensureL2Locked). The slice is marked dirty
// before anything that may flush (Q3).
func (im *Image) setEntry(o format.GuestOff, e format.L2Entry) error {
	return im.storeEntry(o, e, false, 0)
}

// setXEntry stores e and its subcluster bitmap as the extended L2 entry
// of guest offset o, in one update under the table's lock (as setEntry).
func (im *Image) setXEntry(o format.GuestOff, e format.L2Entry, bitmap uint64) error {
	return im.storeEntry(o, e, true, bitmap)
}

// storeEntry stores e, and bitmap if withBitmap, as the L2 entry of guest
// offset o under the table's lock (setEntry, setXEntry).
func (im *Image) storeEntry(o format.GuestOff, e format.L2Entry, withBitmap bool, bitmap uint64) error {
	t, i, err := im.l2slice(o)
	if err != nil {
		return err
	}
	if t == nil {
		return corruptf("l1_entry", im.g.L1Index(o), "L2 table vanished")
	}
	t.Lock()
	im.g.PutL2(t.Data, i, e)
	if withBitmap {
		im.g.PutBitmap(t.Data, i, bitmap)
	}
	t.Unlock()
	im.l2c.MarkDirty(t)
	im.l2c.Put(t)
	return nil
}

// ensureL2Locked makes the L2 table for guest offset o exist with COPIED
// set in the L1 (QEMU's l2_allocate): allocate a cluster, make its
// refcount durable (Q1), write the table (zeros, or a copy of a shared
// table) and flush it, then write the L1 entry (Q4).
func (im *Image) ensureL2Locked(o format.GuestOff) error {
	l1 := im.l1.Load()
	l1i := im.g.L1Index(o)
	if l1i >= l1.size() {
		return ErrOutOfRange
	}
	old := l1.load(l1i)
	if old.Offset() != 0 && old.Copied() {
		return nil
	}
	g := &im.g
	off, _, err := im.allocClustersLocked(1)
	if err != nil {
		return err
	}
	im.meta.set(g.HostCluster(off), metaL2)
	if !im.lazy {
		if err := im.rbc.Flush(); err != nil {
			return im.abortL2(off, err)
		}
	}
	for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
		nt, err := im.l2c.GetEmpty(int64(off) + int64(s))
		if err != nil {
			return im.abortL2(off, err)
		}
		if old.Offset() != 0 {
			// COW of a table shared with a snapshot: the entries keep
			// their clusters (whose refcounts already count both
			// tables) and lose COPIED, which they lack already.
			ot, err := im.l2c.Get(int64(old.Offset()) + int64(s))
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
	l1.store(l1i, format.MakeL1(off, true))
	if err := im.writeL1Entry(l1i); err != nil {
		l1.store(l1i, old)
		if !mayHaveLanded(err) {
			// A lock-free lookup may have loaded the new entry: the
			// table is held until the data gate passes (Q12), not
			// freed at once as before it was published.
			for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
				im.l2c.Discard(int64(off) + int64(s))
			}
			im.meta.del(g.HostCluster(off))
			if ferr := im.freeHeldLocked(g.HostCluster(off), false); ferr != nil {
				return errors.Join(err, ferr)
			}
			return err
		}
		// The write may have reached the media all the same (Q4): the
		// table (empty, or the old one's copy, and durable) stays
		// allocated, so no data goes there while an L1 entry on the
		// media may name it (TestRegress_FailedL1EntryWriteKeepsTheTable),
		// and the image refuses writes until it is reopened, so that no
		// Check repair frees it as a leak meanwhile.
		for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
			im.l2c.Discard(int64(off) + int64(s))
		}
		im.loseWritesLocked(err)
		return err
	}
	im.c.l2TablesAllocated.Add(1)
	if old.Offset() != 0 {
		// Q3: the L1 no longer points at the old table; make that
		// durable before its refcount drops. If the flush fails, the
		// media may still name the old (shared) table while memory
		// names the copy (Q4).
		if err := im.dev.Flush(); err != nil {
			im.loseWritesLocked(err)
			return err
		}
		// Held if that was its last reference: a lookup that loaded
		// the old L1 entry lock-free may still read it (Q12).
		if err := im.freeHeldLocked(im.g.HostCluster(old.Offset()), false); err != nil {
			return err
		}
	}
	return nil
}

func (im *Image) abortL2(off format.HostOff, err error) error {
	for s := uint64(0); s < im.g.ClusterSize; s += im.sliceSize {
		im.l2c.Discard(int64(off) + int64(s))
	}
	im.meta.del(im.g.HostCluster(off))
	im.freeClustersLocked(off, 1)
	return err
}
