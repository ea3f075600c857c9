package qcow2

import (
	"errors"

	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// MakeEmpty makes every cluster of the disk unallocated, so that the
// image reads its backing file's bytes everywhere again (QEMU's
// bdrv_make_empty, which qemu-img commit runs on the image it
// committed): unlike Discard, no zero clusters hide the backing file.
// Internal snapshots keep their clusters; the host space only the disk
// held goes back to the file system (Q21), and so do the L2 tables left
// mapping nothing (dropEmptyL2Tables), as QEMU's make_empty leaves an
// image without snapshots with an empty L1 table. The header and its
// features (encryption, extended L2 entries, compression type) stay as
// they are. The dirty bitmaps are left as they are, as QEMU's
// make_empty leaves them (Q22): commit empties an image once its data is
// in the backing file, so that what the disk reads does not change.
func (im *Image) MakeEmpty() error {
	tok := im.writers.enter() // Q18: before the size check
	defer im.writers.exit(tok)
	if err := im.checkWrite(0, 0); err != nil {
		return err
	}
	cs := int64(im.g.ClusterSize)
	if err := im.discardClusters(0, (int64(im.hsize.Load())+cs-1)/cs, discardFull); err != nil {
		return err
	}
	return im.dropEmptyL2Tables()
}

// emptyTable is an L2 table that dropEmptyL2Tables unlinks: its L1
// index, the entry it had, and the registration of the guest clusters
// it maps.
type emptyTable struct {
	l1i uint64
	old format.L1Entry
	reg *sched.Alloc[allocState]
}

// dropEmptyL2Tables frees the L2 tables that only the active L1 table
// names (COPIED: refcount 1, so no snapshot shares them) and whose
// entries are all zero. Under mu, with every guest cluster a table maps
// registered (Q7), so that no allocation is between creating its table
// and linking its cluster (a table whose clusters are busy is kept), it
// clears their L1 entries and writes them; after a flush (Q3: no L1 on
// the media names a table whose refcount dropped) it drops the tables'
// references, each held until lock-free lookups that loaded the old L1
// entry are done (Q12). A crash on the way leaks tables, never frees
// one an L1 entry on the media still names.
func (im *Image) dropEmptyL2Tables() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return err
	}
	l1 := im.l1.Load()
	span := uint64(1) << im.g.L2Bits // guest clusters per table
	var ts []emptyTable
	defer func() {
		for _, t := range ts {
			im.allocs.Release(t.reg)
		}
	}()
	for i := uint64(0); i < l1.size(); i++ {
		e := l1.load(i)
		if e.Offset() == 0 || !e.Copied() || im.damagedL1(i, e) != nil {
			continue
		}
		reg, _, blocker := im.allocs.TryAcquire(i*span, span)
		if reg == nil {
			blocker.Forget()
			continue
		}
		empty, err := im.l2TableEmpty(e.Offset())
		if err != nil || !empty {
			im.allocs.Release(reg)
			if err != nil {
				return err
			}
			continue
		}
		ts = append(ts, emptyTable{l1i: i, old: e, reg: reg})
	}
	if len(ts) == 0 {
		return nil
	}
	for _, t := range ts {
		l1.store(t.l1i, 0)
	}
	written, lastChunk := false, uint64(0)
	for _, t := range ts {
		first, _ := im.tableChunk(t.l1i)
		if written && first == lastChunk {
			continue // the chunk holding this entry is written already
		}
		if err := im.writeL1Entry(t.l1i); err != nil {
			if !written && !mayHaveLanded(err) {
				for _, t := range ts {
					l1.store(t.l1i, t.old)
				}
				return err
			}
			// Some cleared entries may be on the media: the tables stay
			// allocated (a leak at worst), and the image refuses writes
			// until it is reopened (Q4), so that no repair frees them
			// while an L1 entry on the media may still name them.
			im.loseWritesLocked(err)
			return err
		}
		written, lastChunk = true, first
	}
	if err := im.dev.Flush(); err != nil {
		im.loseWritesLocked(err)
		return err
	}
	var errs []error
	for _, t := range ts {
		errs = append(errs, im.freeHeldLocked(im.g.HostCluster(t.old.Offset()), false))
	}
	return errors.Join(errs...)
}

// l2TableEmpty reports whether every entry (and subcluster bitmap) of
// the L2 table at off is zero (mu held: no writer changes it).
func (im *Image) l2TableEmpty(off format.HostOff) (bool, error) {
	for s := uint64(0); s < im.g.ClusterSize; s += im.sliceSize {
		t, err := im.l2c.Get(int64(off) + int64(s))
		if err != nil {
			return false, err
		}
		t.Lock()
		empty := allZero(t.Data)
		t.Unlock()
		im.l2c.Put(t)
		if !empty {
			return false, nil
		}
	}
	return true, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
