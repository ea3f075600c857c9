package qcow2

import (
	"slices"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// This file passes discards down to an external data file (DF7): when a
// Discard or an unmapping WriteZeroes drops a guest cluster's
// allocation, the data file's range at the cluster's offset becomes a
// hole, as QEMU 7.2's qcow2_free_any_cluster passes the discard to the
// data file with pass-discard-request (Options.NoPassDiscard turns both
// this and the image file's punches off).

// dfDroppedLocked notes in fr that the guest cluster of goff lost its
// data file allocation: its entry was old, and is now one that holds no
// data (mu held, the cluster registered).
func (im *Image) dfDroppedLocked(fr *freeList, goff format.GuestOff, old, now format.L2Entry) {
	if !im.df.ext || !im.dfHolds(old) || im.dfHolds(now) {
		return
	}
	fr.df = append(fr.df, goff-format.GuestOff(im.g.InCluster(goff)))
}

// dfHolds reports whether e keeps data in the data file (DF2: normal and
// zero-allocated entries; with extended L2 every allocated cluster is
// normal, whatever its subclusters).
func (im *Image) dfHolds(e format.L2Entry) bool {
	k := im.kindOf(e)
	return k == format.ClusterNormal || k == format.ClusterZeroAlloc
}

// dfPunch makes holes in the data file where fr's clusters were (DF7),
// after the gate has passed (no request reads or writes them through
// their old entries). The L2 tables without the entries are written and
// the image file flushed first, so that no table on the media points
// into a hole, even after a crash (an encrypted cluster would read as
// garbage). Each run of clusters is registered while its hole is made
// (Q7), so no first write into them runs meanwhile; a cluster linked
// again since it was dropped holds new data and is left alone. Only on
// a data file that zeroes efficiently (Caps: MayUnmap and Allocate), so
// that a refused punch never becomes a stream of zeros; best effort, as
// discards are advisory: an error leaves the space allocated. A raw data
// file is zeroed whatever its device can do: it must equal the disk
// (DF4), where the discarded range reads as zeros (QEMU passes the
// discard down to it).
func (im *Image) dfPunch(fr *freeList) {
	d := im.df.dev
	if len(fr.df) == 0 || d == nil {
		return
	}
	if c := d.Caps(); !im.df.raw && c.ZeroFlags&(block.MayUnmap|block.Allocate) != block.MayUnmap|block.Allocate {
		return
	}
	slices.Sort(fr.df)
	fr.df = slices.Compact(fr.df)
	im.mu.Lock()
	if im.writableLocked() != nil || im.tablesDurableLocked() != nil {
		im.mu.Unlock()
		return
	}
	im.mu.Unlock()
	size, err := d.Size()
	if err != nil {
		return
	}
	cs := format.GuestOff(im.g.ClusterSize)
	for i := 0; i < len(fr.df); {
		j := i + 1
		for j < len(fr.df) && fr.df[j] == fr.df[j-1]+cs {
			j++
		}
		if !im.dfPunchRun(d, fr.df[i:j], size) {
			return
		}
		i = j
	}
}

// dfPunchRun punches the adjacent clusters run (cluster offsets, in
// order) with the run registered; it reports false on an error.
func (im *Image) dfPunchRun(d block.Device, run []format.GuestOff, size int64) bool {
	cs := int64(im.g.ClusterSize)
	first := im.g.GuestCluster(run[0])
	im.mu.Lock()
	for {
		reg, _, blocker := im.allocs.TryAcquire(first, uint64(len(run)))
		if reg != nil {
			defer func() {
				im.mu.Lock()
				im.allocs.Release(reg)
				im.mu.Unlock()
			}()
			break
		}
		im.mu.Unlock()
		blocker.Wait() // a first write into the run: it may link a cluster again
		im.mu.Lock()
	}
	if im.writableLocked() != nil {
		im.mu.Unlock()
		return false
	}
	// Which clusters still hold no data (a write linked the others).
	free := make([]bool, len(run))
	for k, c := range run {
		e, err := im.dfEntry(c)
		if err != nil {
			im.mu.Unlock()
			return false
		}
		free[k] = !im.dfHolds(e)
	}
	im.mu.Unlock()
	for k := 0; k < len(run); {
		if !free[k] {
			k++
			continue
		}
		m := k + 1
		for m < len(run) && free[m] {
			m++
		}
		off, end := int64(run[k]), min(int64(run[m-1])+cs, size)
		if off < end {
			if err := d.WriteZeroes(off, end-off, block.MayUnmap); err != nil {
				return false
			}
			im.c.punchedBytes.Add(end - off)
		}
		k = m
	}
	return true
}

// dfEntry is the entry of the guest cluster at c (mu held).
func (im *Image) dfEntry(c format.GuestOff) (format.L2Entry, error) {
	if im.g.ExtendedL2 {
		e, _, err := im.xentry(c)
		return e, err
	}
	return im.entry(c)
}
