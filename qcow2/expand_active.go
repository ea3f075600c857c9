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
// backing file's data) is written with zeros through the allocation
// path, a cluster at a time and only while it is still zero
// (expandZeroCluster), which keeps a preallocated cluster in place and
// copies a table a snapshot shares first. ExpandSnapshotZeroClusters does the snapshots'
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
			if im.crypt != nil || im.df.ext {
				// (Downgrades of LUKS images are refused; legacy
				// AES ones come here: encrypted zeros.)
				if err := im.writeZeroRun(off, end-off); err != nil {
					return err
				}
				break
			}
			for c := off; c < end; c += cs {
				if err := im.expandZeroCluster(guestOff(c), min(cs, size-c)); err != nil {
					return err
				}
			}
		}
		off = end
	}
	return im.Flush()
}

// expandZeroCluster writes zeros over the first n bytes of the guest
// cluster of goff through the allocation path (allocWrite's phases), if
// it is still a zero cluster, deciding with it registered (Q7) and mu
// held: a guest write that linked it since the caller's lookup is left
// alone (zero buffers written over the run through the write path
// overwrote such a write, acknowledged before, in place), one in flight
// is waited for, and one that comes after waits for this one (or writes
// early into it once the zeros are in, Q10).
func (im *Image) expandZeroCluster(goff format.GuestOff, n int64) (err error) {
	tok := im.writers.enter() // as a write (Q18; Close waits for it)
	defer im.writers.exit(tok)
	defer func() {
		if err == nil && im.closeUnwaited.Load() {
			err = block.ErrClosed // as writev: Close's flush may have come first
		}
	}()
	if err := im.checkWrite(int64(goff), n); err != nil {
		return err
	}
	vp := getVec()
	defer putVec(vp)
	*vp = appendZeros((*vp)[:0], block.ZeroBuf(), uint64(n))
	for {
		im.mu.Lock()
		e, err := im.entry(goff)
		if err != nil || (e.Type() != format.ClusterZeroPlain && e.Type() != format.ClusterZeroAlloc) {
			im.mu.Unlock()
			return err
		}
		p, blocker, err := im.beginAllocLocked(goff)
		im.mu.Unlock()
		if blocker != nil {
			blocker.Wait()
			continue
		}
		if p.reg == nil {
			return err
		}
		cowed, err := im.writeWithCOW(&p, *vp, n)
		if err == nil {
			p.st.ready.Store(true)
		}
		err = im.finishAlloc(&p, cowed, err)
		im.allocs.Release(p.reg)
		return err
	}
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
