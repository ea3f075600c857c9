package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// qemuAlloc replays QEMU 7.2's cluster allocator (block/qcow2-refcount.c:
// alloc_clusters_noref, update_refcount, alloc_refcount_block,
// qcow2_alloc_clusters[_at], qcow2_refcount_area) on a new image, in
// which every refcount is 0 or 1, so that a preallocated image can be
// laid out cluster for cluster as qemu-img lays it out. Positions are
// cluster indexes; it only plans, it writes nothing.
type qemuAlloc struct {
	g       *format.Geometry
	used    []uint64 // bitset: clusters whose refcount is 1
	table   []uint64 // the refcount table: each entry's refblock cluster (0: none)
	tableAt uint64   // the table's first cluster
	free    uint64   // QEMU's free_cluster_index
	end     uint64   // the file's length in bytes: the end of every write so far
	// stale are the refcount tables QEMU freed, as last written: their
	// bytes stay in the file where nothing overwrites them.
	stale []staleTable
}

type staleTable struct {
	at      uint64
	entries []uint64
}

// errQemuAgain is QEMU's -EAGAIN from alloc_refcount_block: a refcount
// block was placed, the caller searches for free clusters again.
var errQemuAgain = errors.New("qcow2: allocation restarts")

// newQemuAlloc is the state qcow2_co_create leaves before it sizes the
// image: the header, a one-cluster refcount table and refcount block 0
// in clusters 0-2.
func newQemuAlloc(g *format.Geometry) *qemuAlloc {
	a := &qemuAlloc{g: g, table: make([]uint64, g.ClusterSize/format.TableEntrySize), tableAt: 1}
	a.table[0] = 2
	for c := uint64(0); c < 3; c++ {
		a.set(c)
	}
	a.wrote(0, 3)
	return a
}

func (a *qemuAlloc) set(c uint64) {
	for uint64(len(a.used)) <= c>>6 {
		a.used = append(a.used, 0)
	}
	a.used[c>>6] |= 1 << (c & 63)
}

func (a *qemuAlloc) clear(c uint64) {
	if c>>6 < uint64(len(a.used)) {
		a.used[c>>6] &^= 1 << (c & 63)
	}
}

func (a *qemuAlloc) bit(c uint64) bool {
	return c>>6 < uint64(len(a.used)) && a.used[c>>6]&(1<<(c&63)) != 0
}

// refcount is qcow2_get_refcount: 0 where no refcount block covers c.
func (a *qemuAlloc) refcount(c uint64) bool {
	grp := c >> a.g.RefblockBits
	return grp < uint64(len(a.table)) && a.table[grp] != 0 && a.bit(c)
}

// wrote notes a write of n clusters from cluster c.
func (a *qemuAlloc) wrote(c, n uint64) { a.wroteBytes((c + n) << a.g.ClusterBits) }

func (a *qemuAlloc) wroteBytes(end uint64) { a.end = max(a.end, end) }

// allocNoref is alloc_clusters_noref: n free clusters in a row from
// free_cluster_index on, their refcounts not yet set.
func (a *qemuAlloc) allocNoref(n uint64) uint64 {
	start := a.free
	for a.free-start < n {
		c := a.free
		a.free++
		if a.refcount(c) {
			start = a.free
		}
	}
	return start
}

// update is update_refcount with an addend of 1 on the n clusters from
// off, added or (decrease) taken off; on an error it undoes what it did.
func (a *qemuAlloc) update(off, n uint64, decrease bool) error {
	oldGrp := ^uint64(0)
	for c := off; c < off+n; c++ {
		grp := c >> a.g.RefblockBits
		if grp != oldGrp {
			err := a.allocRefblock(c)
			if errors.Is(err, errQemuAgain) && a.free > off {
				a.free = off
			}
			if err != nil {
				_ = a.update(off, c-off, !decrease) // the blocks exist: it cannot fail
				return err
			}
		}
		oldGrp = grp
		if decrease {
			a.clear(c)
			a.free = min(a.free, c)
		} else {
			a.set(c)
		}
	}
	return nil
}

// allocRefblock is alloc_refcount_block: nil if a refcount block covers
// cluster c; else it places one (describing itself if it lies in the
// range it covers, else counted where it lies) at the first free
// cluster, growing the refcount table if it has no entry for it, and
// returns errQemuAgain.
func (a *qemuAlloc) allocRefblock(c uint64) error {
	grp := c >> a.g.RefblockBits
	if grp < uint64(len(a.table)) && a.table[grp] != 0 {
		return nil
	}
	nb := a.allocNoref(1)
	if nb>>a.g.RefblockBits == grp {
		a.set(nb)
	} else if err := a.update(nb, 1, false); err != nil {
		return err
	}
	a.wrote(nb, 1)
	if grp < uint64(len(a.table)) {
		a.table[grp] = nb
		return errQemuAgain
	}
	e := a.g.RefblockEntries
	used := (max(c, nb) + 1 + e - 1) / e
	if _, err := a.area(used*e, 0, false, grp, nb); err != nil {
		return err
	}
	return errQemuAgain
}

// area is qcow2_refcount_area: from cluster start (past everything in
// use), new refcount blocks and a new refcount table that cover
// themselves and additional clusters after them (the table half as large
// again unless exact), the block nb entered at index idx if not 0; the
// old table is freed. It returns the first cluster after them.
func (a *qemuAlloc) area(start, additional uint64, exact bool, idx, nb uint64) (uint64, error) {
	e, perCluster := a.g.RefblockEntries, a.g.ClusterSize/format.TableEntrySize
	total := qemuRefblocksFor(start+additional, e, perCluster, !exact)
	size := total
	if !exact {
		size += (total + 1) / 2
	}
	size = (size + perCluster - 1) / perCluster * perCluster
	clusters := size / perCluster
	if size*format.TableEntrySize > format.MaxReftableSize {
		return 0, fmt.Errorf("%w: refcount table too large", ErrUnsupported)
	}
	nt := make([]uint64, size)
	maxIdx := uint64(len(a.table)) - 1
	for maxIdx > 0 && a.table[maxIdx] == 0 {
		maxIdx--
	}
	if size > maxIdx {
		copy(nt, a.table[:maxIdx+1])
	} else {
		copy(nt, a.table[:size])
	}
	if nb != 0 {
		nt[idx] = nb
	}
	first := start / e
	tableAt := start
	for i := first; i < total; i++ {
		if nt[i] == 0 {
			tableAt++
		}
	}
	end := tableAt + clusters
	blk := start
	for i := first; i < total; i++ {
		if nt[i] == 0 {
			nt[i] = blk
			blk++
		}
		covered := i * e
		if covered < end {
			j := uint64(0)
			if covered < start {
				j = start - covered
			}
			for ; j < min(end-covered, e); j++ {
				a.set(covered + j)
			}
		}
	}
	a.wrote(start, end-start)
	old, oldClusters := a.tableAt, (uint64(len(a.table))+perCluster-1)/perCluster
	a.stale = append(a.stale, staleTable{at: old, entries: a.table})
	a.table, a.tableAt = nt, tableAt
	if err := a.update(old, oldClusters, true); err != nil {
		return 0, err
	}
	return end, nil
}

// qemuRefblocksFor is the refcount block count of
// qcow2_refcount_metadata_size: the blocks that cover clusters and
// themselves and their table (with room for half as much table again if
// generous).
func qemuRefblocksFor(clusters, perBlock, perTableCluster uint64, generous bool) uint64 {
	var table, blocks, n uint64
	for {
		last := n
		blocks = (clusters + table + blocks + perBlock - 1) / perBlock
		table = (blocks + perTableCluster - 1) / perTableCluster
		n = clusters + blocks + table
		if n == last && generous {
			clusters += (table + 1) / 2
			n = 0
			generous = false
		}
		if n == last {
			return blocks
		}
	}
}

// allocClusters is qcow2_alloc_clusters: n clusters in a row, counted.
func (a *qemuAlloc) allocClusters(n uint64) (uint64, error) {
	for {
		off := a.allocNoref(n)
		err := a.update(off, n, false)
		if !errors.Is(err, errQemuAgain) {
			return off, err
		}
	}
}

// allocAt is qcow2_alloc_clusters_at: as many of the n clusters from
// off as are free in a row, counted; it returns how many.
func (a *qemuAlloc) allocAt(off, n uint64) (uint64, error) {
	for {
		i := uint64(0)
		for i < n && !a.refcount(off+i) {
			i++
		}
		err := a.update(off, i, false)
		if !errors.Is(err, errQemuAgain) {
			return i, err
		}
	}
}

// lastUsed is qcow2_get_last_cluster for a file of the given length:
// the last cluster in it with a refcount, or -1.
func (a *qemuAlloc) lastUsed(length uint64) int64 {
	for c := int64((length+a.g.ClusterSize-1)>>a.g.ClusterBits) - 1; c >= 0; c-- {
		if a.refcount(uint64(c)) {
			return c
		}
	}
	return -1
}
