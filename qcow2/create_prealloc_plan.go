package qcow2

import (
	"github.com/qring/qring/qcow2/format"
)

// preallocPlan is where qemu-img 7.2 puts every cluster of a new image
// it creates with preallocation=metadata, falloc or full
// (qcow2_co_create, then qcow2_co_truncate: the L1 table, then
// preallocate_co for metadata; qcow2_refcount_area, the data clusters
// after it and then the L2 tables for falloc and full), replayed on
// qemuAlloc. Positions are cluster indexes.
type preallocPlan struct {
	a    *qemuAlloc
	l1At uint64   // the L1 table (0: none, an empty disk)
	l2   []uint64 // each L1 entry's L2 table
	runs []dataRun
	// dataFrom and dataTo (bytes) are the range falloc and full reserve
	// or write: the data clusters, all in a row after the new refcount
	// structures.
	dataFrom, dataTo uint64
	// cowFrom and cowTo (bytes) are the zeros QEMU's metadata
	// preallocation writes after the last guest byte up to the end of
	// its (sub)cluster: the tail of its write request, copied on write.
	cowFrom, cowTo uint64
}

// dataRun maps n guest clusters from guest to n host clusters from host.
type dataRun struct{ guest, host, n uint64 }

// planPrealloc lays out an image of size bytes (a multiple of 512);
// dataFile: its data lies in an external data file (DF2: each cluster in
// its own place there).
func planPrealloc(g *format.Geometry, size uint64, mode string, dataFile bool) (*preallocPlan, error) {
	a := newQemuAlloc(g)
	p := &preallocPlan{a: a, l2: make([]uint64, g.L1EntriesFor(size))}
	if n := uint64(len(p.l2)); n > 0 {
		// qcow2_grow_l1_table: it writes the table's entries only.
		at, err := a.allocClusters((n*format.TableEntrySize + g.ClusterMask) >> g.ClusterBits)
		if err != nil {
			return nil, err
		}
		p.l1At = at
		a.wroteBytes(at<<g.ClusterBits + n*format.TableEntrySize)
	}
	var err error
	if dataFile {
		err = p.linked(size)
	} else if mode == PreallocMetadata {
		err = p.metadata(size)
	} else {
		err = p.reserved(size)
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// ensureL2 is get_cluster_table's l2_allocate for guest cluster gc.
func (p *preallocPlan) ensureL2(gc uint64) error {
	i := gc >> p.a.g.L2Bits
	if p.l2[i] != 0 {
		return nil
	}
	at, err := p.a.allocClusters(1)
	if err != nil {
		return err
	}
	p.l2[i] = at
	p.a.wrote(at, 1)
	return nil
}

func (p *preallocPlan) addRun(guest, host, n uint64) {
	if k := len(p.runs) - 1; k >= 0 && p.runs[k].guest+p.runs[k].n == guest && p.runs[k].host+p.runs[k].n == host {
		p.runs[k].n += n
		return
	}
	p.runs = append(p.runs, dataRun{guest, host, n})
}

// metadata is preallocate_co: requests of at most INT_MAX bytes, each
// (qcow2_alloc_host_offset) allocating the data clusters of one L2 table
// after that table, and going on into the next table only while its
// clusters follow on (they do not: its L2 table takes the next cluster).
// The file then ends at the last request's last byte, or after the
// metadata if that lies further.
func (p *preallocPlan) metadata(size uint64) error {
	g := p.a.g
	maxReq := uint64(1<<31-1) &^ g.ClusterMask
	var host, cur uint64
	for off := uint64(0); off < size; off += cur {
		req := min(size-off, maxReq)
		gc := off >> g.ClusterBits
		done, at, err := p.allocHostOffset(gc, (req+g.ClusterMask)>>g.ClusterBits)
		if err != nil {
			return err
		}
		host, cur = at, min(req, done<<g.ClusterBits)
	}
	if size == 0 {
		return nil
	}
	sub := g.ClusterSize
	if g.ExtendedL2 {
		sub = g.SubclusterSize()
	}
	if tail := size % sub; tail != 0 {
		last := p.runs[len(p.runs)-1]
		p.cowFrom = (last.host+last.n-1)<<g.ClusterBits + size&g.ClusterMask
		p.cowTo = p.cowFrom + sub - tail
		p.a.wroteBytes(p.cowTo)
	}
	p.a.wroteBytes(host<<g.ClusterBits + cur)
	return nil
}

// linked is preallocate_co on an image with a data file, for every
// preallocation mode (qcow2_co_truncate leaves falloc and full to it
// there, and data_file_raw implies metadata): qcow2_alloc_host_offset
// allocates nothing but the L2 tables, one after the other as its
// requests reach them (do_alloc_cluster_offset gives each cluster its
// own offset in the data file), and the file ends after the last of them
// (the last request's end is the data file's). With clusters of 512
// bytes an L2 table that reaches a range no refcount block covers comes
// before the block, which QEMU places after it (alloc_refcount_block).
func (p *preallocPlan) linked(size uint64) error {
	g := p.a.g
	n := (size + g.ClusterMask) >> g.ClusterBits
	for gc := uint64(0); gc < n; {
		k := min(n-gc, g.L2Entries-gc&(g.L2Entries-1))
		if err := p.ensureL2(gc); err != nil {
			return err
		}
		p.addRun(gc, gc, k)
		gc += k
	}
	return nil
}

// allocHostOffset is qcow2_alloc_host_offset for the n clusters from
// guest cluster gc, none allocated: it returns how many it allocated and
// where the first one lies.
func (p *preallocPlan) allocHostOffset(gc, n uint64) (done, host uint64, err error) {
	g := p.a.g
	const maxReqClusters = 0x7ffffe00 // BDRV_REQUEST_MAX_BYTES
	next, left, started := gc, n, false
	for left > 0 {
		// handle_copied looks the entry up first, allocating the L2
		// table; handle_alloc then takes up to the table's end.
		if err := p.ensureL2(next); err != nil {
			return 0, 0, err
		}
		k := min(left, g.L2Entries-next&(g.L2Entries-1), maxReqClusters>>g.ClusterBits)
		var at uint64
		if !started {
			if at, err = p.a.allocClusters(k); err != nil {
				return 0, 0, err
			}
			host, started = at, true
		} else {
			at = host + (next - gc)
			if k, err = p.a.allocAt(at, k); err != nil {
				return 0, 0, err
			}
			if k == 0 {
				break // cannot extend the contiguous allocation
			}
		}
		p.addRun(next, at, k)
		next, left = next+k, left-k
	}
	return n - left, host, nil
}

// reserved is the falloc and full case of qcow2_co_truncate: refcount
// structures from the file's last used cluster on that cover the data
// clusters and their L2 tables, the data clusters after them, and the L2
// tables where the allocator finds room (the first one in the old
// refcount table's cluster).
func (p *preallocPlan) reserved(size uint64) error {
	a, g := p.a, p.a.g
	oldEnd := (a.end + g.ClusterMask) >> g.ClusterBits
	if last := a.lastUsed(a.end); last >= 0 {
		oldEnd = uint64(last) + 1
	}
	n := (size + g.ClusterMask) >> g.ClusterBits
	tables := (n+g.L2Entries-1)/g.L2Entries + 1
	start, err := a.area(oldEnd, n+tables, true, 0, 0)
	if err != nil {
		return err
	}
	if _, err := a.allocAt(start, n); err != nil {
		return err
	}
	p.dataFrom, p.dataTo = a.end, (start+n)<<g.ClusterBits
	a.wroteBytes(p.dataTo)
	for gc, host := uint64(0), start; gc < n; {
		k := min(n-gc, g.L2Entries-gc&(g.L2Entries-1))
		if err := p.ensureL2(gc); err != nil {
			return err
		}
		p.addRun(gc, host, k)
		gc, host = gc+k, host+k
	}
	return nil
}
