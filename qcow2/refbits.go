package qcow2

import (
	"fmt"
	"math/bits"

	"github.com/qring/qring/qcow2/format"
)

// SetRefcountBits changes the width of the refcounts to bits (a power of
// two, 1 to 64), as qemu-img amend -o refcount_bits= does (QEMU's
// qcow2_change_refcount_order). The stored refcounts are copied, leaks
// and all, into new refcount blocks and a new table written past
// everything in the file; once they are durable one header write, in its
// first sector, switches the width and the table together (Q4, FM6), and
// the old structures are then unreferenced clusters (a crash before it
// leaves the old ones in force and the new ones leaked). Refused, having
// changed nothing, on a version 2 image unless bits is 16, and when a
// refcount does not fit the new width.
func (im *Image) SetRefcountBits(n uint32) error {
	if n == 0 || n > 64 || n&(n-1) != 0 {
		return fmt.Errorf("%w: refcount_bits=%d (a power of two up to 64)", ErrUnsupported, n)
	}
	order := uint32(bits.TrailingZeros32(n))
	// Not while a resize runs (Q18), which may grow the refcount table.
	if !im.resizeMu.TryLock() {
		return ErrResizeBusy
	}
	defer im.resizeMu.Unlock()
	if err := im.Flush(); err != nil {
		return err
	}
	if err := im.lockIdle(); err != nil {
		return err
	}
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return err
	}
	if order == im.g.RefcountOrder {
		return nil
	}
	if im.hdr.Version < 3 {
		return fmt.Errorf("%w: Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)", ErrUnsupported)
	}
	if err := im.flushLocked(); err != nil {
		return err
	}
	counts, err := im.storedRefcountsLocked(maxRefcount(order), n)
	if err != nil {
		return err
	}
	return im.rebuildRefcountsLocked(counts, order, false)
}

// storedRefcountsLocked reads every stored refcount of the file (and of
// the clusters the allocator holds past its end), refusing one above
// limit, the largest the new width holds.
func (im *Image) storedRefcountsLocked(limit uint64, width uint32) ([]uint32, error) {
	g := &im.g
	fsize, err := im.dev.Size()
	if err != nil {
		return nil, err
	}
	n := max((uint64(fsize)+g.ClusterSize-1)>>g.ClusterBits, g.HostCluster(im.space.mark()))
	counts := make([]uint32, n)
	for ri, b := range im.reftable {
		base := uint64(ri) << g.RefblockBits
		if b == 0 || base >= n {
			continue
		}
		t, err := im.rbc.Get(int64(b))
		if err != nil {
			return nil, err
		}
		t.Lock()
		for bi := uint64(0); bi < g.RefblockEntries && base+bi < n; bi++ {
			v := format.GetRefcount(t.Data, g.RefcountOrder, bi)
			if v > limit || v > uint64(^uint32(0)) {
				t.Unlock()
				im.rbc.Put(t)
				return nil, fmt.Errorf("%w: Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d",
					ErrUnsupported, width, g.HostClusterOff(base+bi), v)
			}
			counts[base+bi] = uint32(v)
		}
		t.Unlock()
		im.rbc.Put(t)
	}
	// Past the mark the file holds only space reserved ahead (SP1):
	// the rebuild places the new structures after the counts, so they
	// end where the last cluster in use does, not after the reserve
	// (which made the file twice the data's size, the reserve kept
	// under them at the close).
	last := len(counts)
	for last > 0 && counts[last-1] == 0 {
		last--
	}
	keep := max(uint64(last), g.HostCluster(im.space.mark()+format.HostOff(g.ClusterSize)-1))
	return counts[:min(keep, n)], nil // (a mark inside a cluster past the file's end)
}
