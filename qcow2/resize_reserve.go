package qcow2

import (
	"errors"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// A growth with falloc or full preallocation gives its new clusters
// their space in QEMU 7.2's order (qcow2_co_truncate): the refcount
// structures that will count them first ("Failed to resize refcount
// structures"), then the data's space, reserved or written with zeros
// from the file's end as the file driver's truncate with the mode
// ("Failed to resize underlying file: ..."), and only then the links.
// Out of space, it fails at the step qemu-img fails at, and the file
// goes back to its length before the step, as the file driver's
// truncate cuts it back (file-posix.c handle_aiocb_truncate): qimg
// linked first, failed writing an L2 table back into the sparse range
// ("cache l2: table at 0x200a0000: No space left on device"), and left
// the file gigabytes longer (sparse, nothing in use past the old end).
//
// The data clusters are then taken contiguously from the area's end,
// and the new L2 tables after them, into the holes the old tables left
// and past the data (growthDataLocked), as QEMU does: the file is byte
// for byte qemu-img's (refcountAreaLocked writes QEMU's exact-size
// table first; TestResize_PreallocNewTablesLikeQemu).

// growReserve is the space reserveGrowthLocked gave the clusters of a
// growth: [off, end) of the image file, whose length was size before.
type growReserve struct {
	off, end, size int64
}

// reserveGrowthLocked makes the refcount blocks that will count the
// clusters a falloc or full preallocation of the guest range [cur,
// size) places from the high-water mark on (its data clusters from
// im.freeIdx, which the caller set to the mark, and as many L2 tables
// as it may place past them), then gives that range its space in mode
// (preallocateLocked gives back what the tables placed in holes left
// unused). mu held, no
// allocation in flight. On failure the file is back to its length
// before the space was asked for.
func (im *Image) reserveGrowthLocked(mode string, cur, size uint64) (growReserve, error) {
	g := &im.g
	cs := g.ClusterSize
	// The clusters preallocateLocked will place: every guest cluster of
	// the range (the old end's one may be allocated already: one
	// cluster too many, cut at the end), and an L2 table for every L1
	// entry of the range without one of its own (ensureL2Locked).
	n := (size+cs-1)>>g.ClusterBits - cur>>g.ClusterBits
	l1 := im.l1.Load()
	for i := g.L1Index(format.GuestOff(cur)); i <= g.L1Index(format.GuestOff(size-1)) && i < l1.size(); i++ {
		if e := l1.load(i); e.Offset() == 0 || !e.Copied() {
			n++
		}
	}
	// QEMU's refcount structures first: a new table and the blocks for
	// the data clusters and as many L2 tables as QEMU counts (one more
	// than the data's need: any placement of the range's tables is
	// covered, ours too).
	nData := (size+cs-1)>>g.ClusterBits - cur>>g.ClusterBits
	if _, err := im.refcountAreaLocked(nData + (nData+g.L2Entries-1)/g.L2Entries + 1); err != nil {
		return growReserve{}, stepErrno("Failed to resize refcount structures", err)
	}
	// Then any block still missing (none: the area covers the range
	// preallocateLocked places): each goes to the first free cluster
	// (the mark on), moving the range by one.
	for tries := 0; ; tries++ {
		first := g.HostCluster(im.space.mark())
		var missing []uint64
		lo, _ := g.RefIndex(first)
		hi, _ := g.RefIndex(first + n - 1)
		for ri := lo; ri <= hi; ri++ {
			if ri >= uint64(len(im.reftable)) || im.reftable[ri] == 0 {
				missing = append(missing, ri)
			}
		}
		if len(missing) == 0 {
			break
		}
		if tries > 64 {
			return growReserve{}, errors.New("qcow2: refcount blocks for the grown range did not converge")
		}
		if err := im.markDirtyBit(); err != nil {
			return growReserve{}, err
		}
		for _, ri := range missing {
			if err := im.ensureRefblock(ri); err != nil {
				return growReserve{}, stepErrno("Failed to resize refcount structures", err)
			}
		}
		if err := im.rbc.Flush(); err != nil {
			return growReserve{}, stepErrno("Failed to resize refcount structures", err)
		}
	}
	im.freeIdx = max(im.freeIdx, g.HostCluster(im.space.mark()))
	fsize, err := im.dev.Size()
	if err != nil {
		return growReserve{}, err
	}
	r := growReserve{off: int64(im.space.mark()), size: fsize}
	r.end = r.off + int64(n*cs)
	// Nothing lies at or past the mark (SP1, SP2): the space is nobody's
	// yet, and the clusters placed there are written only once it is
	// there.
	if err := reserveData(im.dev, r.off, r.end, mode); err != nil {
		im.cutGrowthLocked(r.size)
		return growReserve{}, &reserveError{mode: mode, err: err}
	}
	return r, nil
}

// stepErrno is err as the StepError of step, naming only the device
// request's errno when there is one (not the cache that wrote it), as
// QEMU's message names the errno.
func stepErrno(step string, err error) error {
	if oe := (*block.OpError)(nil); errors.As(err, &oe) {
		return &StepError{Step: step, Err: oe}
	}
	return &StepError{Step: step, Err: err}
}

// cutGrowthLocked cuts the image file back to size, its length before a
// falloc or full growth asked for the new clusters' space, or to the
// end of the last cluster in use past it (an L2 table the failed
// preallocation placed and keeps), after that growth failed and its
// data clusters were freed (unlinkPrealloc): as QEMU's file driver cuts
// the file back when the truncate with the mode fails. Nothing past the
// cut is in use (refcount 0, and a cluster whose unlinking could not be
// made durable keeps its count), so no table points there; the mark
// stays where it is, and the space below it the cut made a hole is
// zeroed before it is handed out again (Q2), as any space below it. A
// reserve ahead keeps its space. mu held.
func (im *Image) cutGrowthLocked(size int64) {
	g := &im.g
	sz, err := im.dev.Size()
	if err != nil || sz <= size {
		return
	}
	// Not below a reserve ahead's end either (the space it reserved
	// past the mark is fresh for takeSpace).
	keep := max(size, int64(im.space.reserved))
	stop := g.HostCluster(format.HostOff(size + int64(g.ClusterSize) - 1))
	for c := g.HostCluster(im.space.mark()); c > stop; c-- {
		rc, err := im.refcount(c - 1)
		if err != nil {
			return
		}
		if rc != 0 {
			keep = max(keep, int64(g.HostClusterOff(c)))
			break
		}
	}
	if keep < sz && im.dev.Truncate(keep) == nil {
		im.dev.Flush()
	}
}
