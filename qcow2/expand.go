package qcow2

import (
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// ExpandSnapshotZeroClusters rewrites the zero clusters of the internal
// snapshots' L2 tables into what version 2 can represent, as QEMU's
// qcow2_expand_zero_clusters does for the inactive L1 tables before a
// downgrade: a zero cluster becomes unallocated when the image has no
// backing file, and otherwise a new cluster of zeros (referenced once for
// each table that shares the L2 table). Unlike QEMU, a preallocated zero
// cluster's host cluster is never written: another table may still use
// it as data; it loses the references of this L2 table once the table no
// longer names it.
//
// Order (Q1, Q3): the new clusters are counted and zeroed, durably,
// before the L2 tables name them; the old host clusters are uncounted
// once the tables are written and flushed, and COPIED is set where the
// active image is left alone with one (Q6). A crash leaves leaks at
// worst, and missing COPIED flags after the last flush but one. L2 tables the active L1 also names are left to the active
// image's own expansion (writing zeros over its zero clusters, which
// copies a shared table first), and SetVersion refuses the downgrade
// while any zero cluster remains.
func (im *Image) ExpandSnapshotZeroClusters() error {
	if !im.resizeMu.TryLock() { // Q18, as SetVersion
		return ErrResizeBusy
	}
	defer im.resizeMu.Unlock()
	if err := im.lockIdle(); err != nil {
		return err
	}
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return err
	}
	if len(im.snapshots) == 0 {
		return nil
	}
	if im.hdr.IncompatibleFeatures&format.IncompatExtendedL2 != 0 {
		return fmt.Errorf("%w: expanding zero clusters with extended L2 entries", ErrUnsupported)
	}
	if im.crypt != nil && im.hasBackingFileLocked() {
		// New clusters get plain zeros here, not encrypted ones
		// (checkDowngradeLocked refuses the downgrade before this).
		return fmt.Errorf("%w: expanding snapshot zero clusters of an encrypted image", ErrUnsupported)
	}
	if err := im.flushLocked(); err != nil {
		return err
	}
	g := &im.g
	active := map[format.HostOff]bool{}
	l1 := im.l1.Load()
	for i := range l1.size() {
		active[l1.load(i).Offset()] = true
	}
	seen := map[format.HostOff]bool{}
	type unref struct {
		c uint64
		n uint64
	}
	var drops []unref
	backed := im.hasBackingFileLocked() // as ExpandZeroClusters
	entries := make([]format.L2Entry, im.sliceSize/g.L2EntrySize)
	for _, sn := range im.snapshots {
		snl1, err := im.readL1Locked(sn.L1TableOffset, sn.L1Size)
		if err != nil {
			return err
		}
		for _, le := range snl1 {
			l2off := le.Offset()
			if l2off == 0 || seen[l2off] || active[l2off] {
				continue
			}
			seen[l2off] = true
			shares, err := im.refcount(g.HostCluster(l2off))
			if err != nil {
				return err
			}
			if shares == 0 {
				return corruptf("l2_offset", uint64(l2off), "snapshot L2 table with refcount 0")
			}
			for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
				off := int64(l2off) + int64(s)
				t, err := im.pinL2Slice(off, entries)
				if err != nil {
					return err
				}
				im.l2c.Put(t)
				news := map[uint64]format.L2Entry{}
				for k, e := range entries {
					t := e.Type()
					if t != format.ClusterZeroPlain && t != format.ClusterZeroAlloc {
						continue
					}
					if t == format.ClusterZeroAlloc {
						drops = append(drops, unref{g.HostCluster(e.Offset()), shares})
					}
					if !backed { // unallocated reads as zeros
						news[uint64(k)] = 0
						continue
					}
					y, fresh, err := im.allocClustersLocked(1)
					if err != nil {
						return err
					}
					if shares > 1 {
						if err := im.updateRefcountLocked(g.HostCluster(y), int64(shares-1)); err != nil {
							return err
						}
					}
					if !fresh {
						if err := im.dev.WriteZeroes(int64(y), int64(g.ClusterSize), 0); err != nil {
							return err
						}
					}
					news[uint64(k)] = format.MakeL2(y, shares == 1, false)
				}
				if len(news) == 0 {
					continue
				}
				// The new clusters' refcounts and zeros are durable
				// before the table names them (Q1).
				if err := im.flushLocked(); err != nil {
					return err
				}
				// An inactive table: written here, not by the cache,
				// whose write-back takes only active tables (QEMU's
				// overlap check ignores inactive L2s here too).
				// (An L2 table the active image copied away from may
				// still be marked an L2 table: it is one.)
				if what := im.inactiveL2Overlap(format.HostOff(off), im.sliceSize); what != "" {
					return im.markCorrupt(corruptf("l2_table", uint64(off), "snapshot L2 table overlaps the %s", what))
				}
				buf := alignedCopy(make([]byte, im.sliceSize), im.memAlign)
				for k, e := range entries {
					if n, ok := news[uint64(k)]; ok {
						e = n
					}
					g.PutL2(buf, uint64(k), e)
				}
				im.l2c.Discard(off)
				if err := im.writeMeta(buf, format.HostOff(off)); err != nil {
					return err
				}
			}
		}
	}
	// The tables no longer name the old host clusters, durably, before
	// those lose the references (Q3).
	if err := im.flushLocked(); err != nil {
		return err
	}
	for _, d := range drops {
		for range d.n {
			if err := im.freeHeldLocked(d.c, false); err != nil {
				return err
			}
		}
	}
	// A host cluster the active image shares may now be its alone: COPIED
	// again (Q6), after the refcounts are durable, as a snapshot delete
	// does (a crash between leaves only COPIED flags missing, which
	// repair restores).
	return im.fixCopiedLocked()
}

// checkSnapshotZeroClustersLocked fails with ErrZeroClusters when an L2
// table of an internal snapshot holds a zero cluster (mu held).
func (im *Image) checkSnapshotZeroClustersLocked() error {
	name, err := im.snapshotWithEntryLocked(format.L2Entry.Zero)
	if err == nil && name != "" {
		err = fmt.Errorf("%w in snapshot %q", ErrZeroClusters, name)
	}
	return err
}

// snapshotWithEntryLocked returns the name of the first internal
// snapshot whose L2 tables hold an entry that match accepts, "" if none
// does (mu held).
func (im *Image) snapshotWithEntryLocked(match func(format.L2Entry) bool) (string, error) {
	g := &im.g
	entries := make([]format.L2Entry, im.sliceSize/g.L2EntrySize)
	seen := map[format.HostOff]bool{}
	for _, sn := range im.snapshots {
		snl1, err := im.readL1Locked(sn.L1TableOffset, sn.L1Size)
		if err != nil {
			return "", err
		}
		for _, le := range snl1 {
			l2off := le.Offset()
			if l2off == 0 || seen[l2off] {
				continue
			}
			seen[l2off] = true
			for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
				t, err := im.pinL2Slice(int64(l2off)+int64(s), entries)
				if err != nil {
					return "", err
				}
				im.l2c.Put(t)
				for _, e := range entries {
					if match(e) {
						return sn.Name, nil
					}
				}
			}
		}
	}
	return "", nil
}
