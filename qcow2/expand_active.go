package qcow2

import (
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// ExpandZeroClusters rewrites the zero clusters of the active disk into
// what version 2 can represent, as QEMU's qcow2_expand_zero_clusters
// does for the active L1 table before a downgrade: without a backing
// file, a zero cluster with no host cluster becomes unallocated (it
// reads zeros all the same); every other one (preallocated, or hiding a
// backing file's data) is written with zeros through the write path,
// which keeps a preallocated cluster in place and copies a table a
// snapshot shares first. ExpandSnapshotZeroClusters does the snapshots'
// tables. Not while a resize runs (Q18).
func (im *Image) ExpandZeroClusters() error {
	if !im.resizeMu.TryLock() {
		return ErrResizeBusy
	}
	defer im.resizeMu.Unlock()
	if im.g.ExtendedL2 {
		return fmt.Errorf("%w: expanding zero clusters with extended L2 entries", ErrUnsupported)
	}
	im.mu.Lock()
	// What reads go by: a backing device given (Options.Backing) shows
	// under unallocated clusters even when the header names none.
	backed := im.hasBackingFileLocked()
	im.mu.Unlock()
	size, err := im.Size()
	if err != nil {
		return err
	}
	cs := int64(im.g.ClusterSize)
	for off := int64(0); off < size; {
		m, err := im.mapRunGated(guestOff(off), uint64(size-off))
		if err != nil {
			return err
		}
		end := off + int64(m.length)
		switch {
		case m.kind == format.ClusterZeroPlain && !backed:
			for c := off; c < end; c += cs {
				if err := im.unmapZeroCluster(guestOff(c)); err != nil {
					return err
				}
			}
		case m.kind == format.ClusterZeroPlain || m.kind == format.ClusterZeroAlloc:
			if err := im.writeZeroRun(off, end-off); err != nil {
				return err
			}
		}
		off = end
	}
	return im.Flush()
}

// writeZeroRun writes zero buffers over [off, off+n) in chunks of at
// most a MiB.
func (im *Image) writeZeroRun(off, n int64) error {
	vp := getVec()
	defer putVec(vp)
	for n > 0 {
		k := min(n, 1<<20)
		*vp = appendZeros((*vp)[:0], block.ZeroBuf(), uint64(k))
		if err := im.Writev(off, *vp); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// unmapZeroCluster makes the guest cluster of goff unallocated if it is
// still a zero cluster without a host cluster, deciding with it
// registered (Q7) and mu held: a write that allocated it meanwhile is
// linked already (and left alone) or waits.
func (im *Image) unmapZeroCluster(goff format.GuestOff) error {
	for {
		blocker, err := im.tryUnmapZeroCluster(goff)
		if blocker == nil {
			return err
		}
		blocker.Wait()
	}
}

func (im *Image) tryUnmapZeroCluster(goff format.GuestOff) (*sched.Alloc[allocState], error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return nil, err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		return blocker, nil
	}
	defer im.allocs.Release(reg)
	e, err := im.entry(goff)
	if err != nil || e.Type() != format.ClusterZeroPlain {
		return nil, err
	}
	if err := im.ensureL2Locked(goff); err != nil { // a snapshot's table is copied first
		return nil, err
	}
	return nil, im.setEntry(goff, 0)
}
