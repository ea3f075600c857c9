package qcow2

import (
	"fmt"

	"github.com/qring/qring/cache"
	"github.com/qring/qring/qcow2/format"
)

// growReftable replaces the refcount table with a larger one covering
// index need (QEMU's qcow2_refcount_area). The new table and the refcount
// blocks describing it go in fresh space at the high-water mark.
// Called with mu held, from ensureRefblock (alloc.go).
func (im *Image) growReftable(need uint64) error {
	g := &im.g
	cs := g.ClusterSize
	per := cs / 8
	newEntries := max(need+1, uint64(len(im.reftable))*2)
	newEntries = (newEntries + per - 1) / per * per
	a := g.HostCluster(im.space.mark()) // first cluster of the area
	var k, tc uint64
	for iter := 0; ; iter++ {
		if iter > 100 {
			return fmt.Errorf("qcow2: refcount table growth did not converge")
		}
		tc = newEntries / per
		end := a + k + tc
		lastRange, _ := g.RefIndex(end - 1)
		if lastRange >= newEntries {
			newEntries = (lastRange + 1 + per - 1) / per * per
			continue
		}
		firstRange, _ := g.RefIndex(a)
		var nk uint64
		for r := firstRange; r <= lastRange; r++ {
			if r >= uint64(len(im.reftable)) || im.reftable[r] == 0 {
				nk++
			}
		}
		if nk == k {
			break
		}
		k = nk
	}
	if tc*cs > format.MaxReftableSize {
		return fmt.Errorf("%w: refcount table would exceed %d bytes", ErrUnsupported, format.MaxReftableSize)
	}
	end := a + k + tc
	// SP1: the area is past the high-water mark; take it before any of
	// it is written.
	im.takeSpace(g.HostClusterOff(a), g.HostClusterOff(end))
	newTable := make([]format.HostOff, newEntries)
	copy(newTable, im.reftable)
	// Place the new blocks at a..a+k-1, in range order.
	firstRange, _ := g.RefIndex(a)
	lastRange, _ := g.RefIndex(end - 1)
	next := a
	newBlocks := map[uint64]uint64{} // range -> block cluster
	for r := firstRange; r <= lastRange; r++ {
		if r >= uint64(len(im.reftable)) || im.reftable[r] == 0 {
			newBlocks[r] = next
			newTable[r] = g.HostClusterOff(next)
			next++
		}
	}
	if err := im.markDirtyBit(); err != nil {
		return err
	}
	// Until the header names the new table, a failure leaves it unnamed:
	// its blocks are dropped (memory treats their ranges as uncovered,
	// so no role of theirs may stay to flag data allocated there), and
	// the area's clusters counted in existing blocks leak.
	undo := func(err error) error {
		for _, bc := range newBlocks {
			im.rbc.Discard(int64(g.HostClusterOff(bc)))
			im.meta.del(bc)
		}
		return err
	}
	// Count every area cluster: in a new block (in memory) or an existing
	// one (through the cache).
	blocks := map[uint64]*cache.Table{}
	for r, bc := range newBlocks {
		t, err := im.rbc.GetEmpty(int64(g.HostClusterOff(bc)))
		if err != nil {
			return undo(err)
		}
		blocks[r] = t
		im.meta.set(bc, metaRefblock)
		defer im.rbc.Put(t)
	}
	for c := a; c < end; c++ {
		r, bi := g.RefIndex(c)
		if t, ok := blocks[r]; ok {
			// No lookup reaches the block until the table points at
			// it, but a write-back of the refcount cache (an L2
			// eviction's dependency flush) may run meanwhile: set the
			// counts under the table's lock, and mark the blocks dirty
			// only once they are complete (cache: modify, then
			// MarkDirty), so that none is written and marked clean
			// half filled.
			t.Lock()
			format.SetRefcount(t.Data, g.RefcountOrder, bi, 1)
			t.Unlock()
			continue
		}
		if err := im.updateRefcountLocked(c, 1); err != nil {
			return undo(err)
		}
	}
	for _, t := range blocks {
		im.rbc.MarkDirty(t)
	}
	if err := im.rbc.Flush(); err != nil {
		return undo(err)
	}
	return im.switchReftableLocked(newTable, g.HostClusterOff(a+k), tc, k, undo)
}

// switchReftableLocked makes newTable (tc clusters at tableOff, its k
// new refcount blocks already durable) the image's refcount table: the
// table written and flushed, then the header naming it (Q4), then the
// old table freed. A failure before the header is written is undo's
// (the new blocks dropped); one of the header write leaves the image
// refusing writes. mu held.
func (im *Image) switchReftableLocked(newTable []format.HostOff, tableOff format.HostOff, tc, k uint64, undo func(error) error) error {
	cs := im.g.ClusterSize
	tb := make([]byte, tc*cs)
	for i, v := range newTable {
		format.PutReftable(tb, uint64(i), v)
	}
	if err := im.writeMeta(alignedCopy(tb, im.memAlign), tableOff); err != nil {
		return undo(err)
	}
	if err := im.dev.Flush(); err != nil {
		return undo(err)
	}
	im.event(EvReftable)
	oldOff, oldClusters := im.hdr.RefcountTableOffset, uint64(im.hdr.RefcountTableClusters)
	im.hdr.RefcountTableOffset = tableOff
	im.hdr.RefcountTableClusters = uint32(tc)
	err := im.writeHeader()
	if err == nil {
		err = im.dev.Flush()
	}
	if err != nil {
		// The header on the device may name either table (Q4): the old
		// one does not cover the new area, whose blocks only the new one
		// names, so counting on in either would leave the other wrong.
		// Keep both and refuse writes until the image is reopened.
		im.hdr.RefcountTableOffset = oldOff
		im.hdr.RefcountTableClusters = uint32(oldClusters)
		im.loseWritesLocked(err)
		return err
	}
	im.reftable = newTable
	im.rtOff.Store(uint64(tableOff))
	im.rtLen.Store(tc * cs)
	im.c.reftableGrowths.Add(1)
	im.c.refblocksAllocated.Add(int64(k))
	// The old table is no longer referenced by the (durable) header.
	return im.freeClustersLocked(oldOff, oldClusters)
}
