package qcow2

import (
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// refcountAreaLocked is QEMU 7.2's qcow2_refcount_area with exact_size,
// as qcow2_co_truncate calls it before a falloc or full growth's data:
// from the high-water mark on (QEMU: past the last cluster in use; the
// same after a growth's open, where the file ends with what it holds), new
// refcount blocks for the ranges without one, then a new refcount table
// of exactly the clusters that cover them, the area itself and
// additional clusters past it, which the header then names; the old
// table is freed. It returns the area's end, where the data go.
//
// It is growReftable (reftable.go) with QEMU's sizing: the table is not
// half as large again, and covers the clusters to come. A table that
// would drop a refcount block past its end keeps it. A failure before
// the header names the table leaves it unnamed (the blocks dropped, the
// area's clusters counted in existing blocks leak, as in QEMU); one of
// the header write, after which the media may name either table, leaves
// the image refusing writes (Q4). mu held, no allocation in flight.
func (im *Image) refcountAreaLocked(additional uint64) (format.HostOff, error) {
	g := &im.g
	cs := g.ClusterSize
	per := cs / format.TableEntrySize
	e := g.RefblockEntries
	start := g.HostCluster(im.space.mark())
	total := qemuRefblocksFor(start+additional, e, per, false)
	maxIdx := uint64(0)
	for i, v := range im.reftable {
		if v != 0 {
			maxIdx = uint64(i)
		}
	}
	size := max(total, maxIdx+1)
	size = (size + per - 1) / per * per
	tc := size / per
	if size*format.TableEntrySize > format.MaxReftableSize {
		return 0, fmt.Errorf("%w: refcount table would exceed %d bytes", ErrUnsupported, format.MaxReftableSize)
	}
	newTable := make([]format.HostOff, size)
	copy(newTable, im.reftable[:min(uint64(len(im.reftable)), size)])
	first := start / e
	k := uint64(0)
	for i := first; i < total; i++ {
		if newTable[i] == 0 {
			k++
		}
	}
	tableAt := start + k
	end := tableAt + tc
	if err := im.markDirtyBit(); err != nil {
		return 0, err
	}
	// SP1: the area is at the high-water mark; take it before any of
	// it is written.
	im.takeSpace(g.HostClusterOff(start), g.HostClusterOff(end))
	newBlocks := map[uint64]uint64{} // range -> block cluster
	next := start
	for i := first; i < total; i++ {
		if newTable[i] == 0 {
			newBlocks[i] = next
			newTable[i] = g.HostClusterOff(next)
			next++
		}
	}
	// As growReftable's: until the header names the table, a failure
	// drops the new blocks (memory sees their ranges uncovered).
	undo := func(err error) error {
		for _, bc := range newBlocks {
			im.rbc.Discard(int64(g.HostClusterOff(bc)))
			im.meta.del(bc)
		}
		return err
	}
	// A block at a time, as QEMU's loop through its cache (a growth by
	// terabytes makes hundreds of blocks; the cache need not hold them
	// all): a new one complete before it is dirty (growReftable: a
	// write-back of the refcount cache may run meanwhile), an existing
	// one through updateRefcountLocked.
	for r := first; r < total; r++ {
		lo, hi := max(start, r*e), min(end, (r+1)*e)
		bc, isNew := newBlocks[r]
		if !isNew {
			for c := lo; c < hi; c++ {
				if err := im.updateRefcountLocked(c, 1); err != nil {
					return 0, undo(err)
				}
			}
			continue
		}
		t, err := im.rbc.GetEmpty(int64(g.HostClusterOff(bc)))
		if err != nil {
			return 0, undo(err)
		}
		im.meta.set(bc, metaRefblock)
		t.Lock()
		for c := lo; c < hi; c++ {
			_, bi := g.RefIndex(c)
			format.SetRefcount(t.Data, g.RefcountOrder, bi, 1)
		}
		t.Unlock()
		im.rbc.MarkDirty(t)
		im.rbc.Put(t)
	}
	if err := im.rbc.Flush(); err != nil {
		return 0, undo(err)
	}
	// The new table, then the header (Q4).
	if err := im.switchReftableLocked(newTable, g.HostClusterOff(tableAt), tc, k, undo); err != nil {
		return 0, err
	}
	return g.HostClusterOff(end), nil
}
