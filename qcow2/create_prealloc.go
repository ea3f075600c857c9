package qcow2

import (
	"errors"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// createPreallocated writes a new image with preallocation=metadata,
// falloc or full onto dev (a regular file, emptied) laid out as qemu-img
// 7.2 lays it out (preallocPlan): the same clusters in the same places,
// the same file length, the same bytes in every cluster, except that a
// data cluster of a metadata image that QEMU puts over a refcount table
// it freed reads as zeros here (QEMU's reads the old table's bytes).
// Everything but the header is written and flushed first (the tables
// before what points at them, Q4, and the zeros of a data cluster before
// its link, Q2, all at once), so that a crash leaves a file without a
// qcow2 header, never an image whose tables are missing. With a data
// file (any preallocation, or data_file_raw) it writes the metadata
// only, every cluster linked to its own place in the data file (DF2).
func createPreallocated(dev block.Device, o *CreateOptions, g *format.Geometry) error {
	dataFile := o.DataFile != ""
	if !dataFile && (o.Preallocation == PreallocFalloc || o.Preallocation == PreallocFull) {
		// The file will hold the whole disk: a length the file system
		// cannot hold (EFBIG) fails now, before the plan's tables of a
		// huge image are built in memory.
		if err := dev.Truncate(o.Size); err != nil {
			return err
		}
	}
	p, err := planPrealloc(g, uint64(o.Size), o.Preallocation, dataFile)
	if err != nil {
		return err
	}
	a, cs := p.a, g.ClusterSize
	h := o.header(g, uint64(len(p.l2)))
	h.L1TableOffset = format.HostOff(p.l1At << g.ClusterBits)
	h.RefcountTableOffset = format.HostOff(a.tableAt << g.ClusterBits)
	h.RefcountTableClusters = uint32(uint64(len(a.table)) * format.TableEntrySize / cs)
	hb, err := h.Encode()
	if err != nil {
		return err
	}
	if err := dev.Truncate(0); err != nil {
		return err
	}
	if p.dataTo > p.dataFrom {
		if err := reserveData(dev, int64(p.dataFrom), int64(p.dataTo), o.Preallocation); err != nil {
			return err
		}
	}
	if p.cowTo > p.cowFrom {
		if err := block.WriteZeroBuffers(dev, int64(p.cowFrom), int64(p.cowTo-p.cowFrom)); err != nil {
			return err
		}
	}
	w := &clusterWriter{dev: dev, g: g}
	for _, t := range a.stale {
		if err := w.table(t.at, w.offsets(t.entries)); err != nil {
			return err
		}
	}
	if o.Preallocation == PreallocMetadata && !dataFile {
		// Data clusters are not written; those over a freed table
		// must read zeros all the same.
		for _, t := range a.stale {
			tn := (uint64(len(t.entries))*format.TableEntrySize + g.ClusterMask) >> g.ClusterBits
			for _, r := range p.runs {
				lo, hi := max(r.host, t.at), min(r.host+r.n, t.at+tn)
				if lo < hi {
					if err := dev.WriteZeroes(int64(lo*cs), int64((hi-lo)*cs), 0); err != nil {
						return err
					}
				}
			}
		}
	}
	for i, b := range a.table {
		if b != 0 {
			if err := w.refblock(a, uint64(i), b); err != nil {
				return err
			}
		}
	}
	if err := w.table(a.tableAt, w.offsets(a.table)); err != nil {
		return err
	}
	if p.l1At != 0 {
		l1 := make([]uint64, len(p.l2))
		for i, at := range p.l2 {
			if at != 0 {
				l1[i] = uint64(format.MakeL1(format.HostOff(at<<g.ClusterBits), true))
			}
		}
		if err := w.table(p.l1At, l1); err != nil {
			return err
		}
	}
	if err := w.l2Tables(p); err != nil {
		return err
	}
	// The file ends where QEMU's does: the L1 table is written up to
	// its last entry, the data of metadata preallocation not at all.
	if sz, err := dev.Size(); err != nil {
		return err
	} else if sz != int64(a.end) {
		if err := dev.Truncate(int64(a.end)); err != nil {
			return err
		}
	}
	if err := dev.Flush(); err != nil {
		return err
	}
	hdr := block.AlignedBuf(int(cs), block.DefaultMemAlign)
	copy(hdr, hb)
	if err := block.WriteAt(dev, hdr, 0); err != nil {
		return err
	}
	return dev.Flush()
}

// clusterWriter writes whole clusters of metadata.
type clusterWriter struct {
	dev block.Device
	g   *format.Geometry
	buf []byte
}

func (w *clusterWriter) clusters(n uint64) []byte {
	if size := int(n * w.g.ClusterSize); cap(w.buf) < size {
		w.buf = block.AlignedBuf(size, block.DefaultMemAlign)
	} else {
		w.buf = w.buf[:size]
		clear(w.buf)
	}
	return w.buf
}

// offsets turns cluster indexes into byte offsets (0 stays 0).
func (w *clusterWriter) offsets(clusters []uint64) []uint64 {
	o := make([]uint64, len(clusters))
	for i, c := range clusters {
		o[i] = c << w.g.ClusterBits
	}
	return o
}

// table writes 64-bit big-endian entries from cluster at, padded with
// zeros to whole clusters.
func (w *clusterWriter) table(at uint64, entries []uint64) error {
	b := w.clusters((uint64(len(entries))*format.TableEntrySize + w.g.ClusterMask) >> w.g.ClusterBits)
	for i, e := range entries {
		format.PutReftable(b, uint64(i), format.HostOff(e))
	}
	return block.WriteAt(w.dev, b, int64(at<<w.g.ClusterBits))
}

// refblock writes refcount block i at cluster at: 1 for every cluster
// in its range that a counts.
func (w *clusterWriter) refblock(a *qemuAlloc, i, at uint64) error {
	b := w.clusters(1)
	first := i * w.g.RefblockEntries
	for j := uint64(0); j < w.g.RefblockEntries; j++ {
		if a.bit(first + j) {
			format.SetRefcount(b, w.g.RefcountOrder, j, 1)
		}
	}
	return block.WriteAt(w.dev, b, int64(at<<w.g.ClusterBits))
}

// l2Tables writes each L2 table with its data clusters' entries
// (allocated, copied; with extended L2 entries no subcluster allocated,
// as QEMU's preallocation leaves them).
func (w *clusterWriter) l2Tables(p *preallocPlan) error {
	g := w.g
	runs := p.runs
	for i, at := range p.l2 {
		if at == 0 {
			continue
		}
		b := w.clusters(1)
		first, last := uint64(i)<<g.L2Bits, uint64(i+1)<<g.L2Bits
		for len(runs) > 0 && runs[0].guest < last {
			r := &runs[0]
			for gc := max(r.guest, first); gc < min(r.guest+r.n, last); gc++ {
				host := r.host + gc - r.guest
				g.PutL2(b, gc-first, format.MakeL2(format.HostOff(host<<g.ClusterBits), true, false))
			}
			if r.guest+r.n > last {
				break
			}
			runs = runs[1:]
		}
		if err := block.WriteAt(w.dev, b, int64(at<<g.ClusterBits)); err != nil {
			return err
		}
	}
	return nil
}

// reserveData gives the file's range [from, to) its space for
// preallocation falloc (reserved: fallocate) or full (zeros written), as
// QEMU's file driver does. Zeros are written for falloc only where the
// file refuses to reserve (ErrNotSupported, B3): any other error (a file
// too large, EFBIG; no space) is the answer, not a reason to write
// zeros until the disk is full. Before zeros are written the file takes
// its final length, as QEMU's full preallocation truncates first, so
// that a length the file system cannot hold fails at once.
func reserveData(dev block.Device, from, to int64, mode string) error {
	if mode == PreallocFalloc && dev.Caps().ZeroFlags&block.Allocate != 0 {
		err := dev.WriteZeroes(from, to-from, block.Allocate)
		if !errors.Is(err, block.ErrNotSupported) {
			return err
		}
	}
	if sz, err := dev.Size(); err != nil {
		return err
	} else if sz < to {
		if err := dev.Truncate(to); err != nil {
			return err
		}
	}
	return block.WriteZeroBuffers(dev, from, to-from)
}
