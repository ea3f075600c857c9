package vmdk

import (
	"github.com/qring/qring/block"
)

// Extent is one run of qemu-img map's output for the disk (KD5).
type Extent struct {
	Start, Length int64
	Present       bool
	Zero, Data    bool
	Compressed    bool
	// Offset is the host offset of Start in File, -1 when there is none.
	Offset int64
	// File is the name of the file Offset lies in ("" with no offset).
	File string
	// Depth is the layer of the parent chain the status comes from: 0
	// the image itself, 1 its parent... (KD6). A run unallocated in
	// every layer has the bottom layer's depth, as qemu-img map shows.
	Depth int
}

// fileRun is the file's data/hole run at off (at most n bytes): data,
// as QEMU's file driver says when it cannot tell.
func fileRun(f block.Device, off, n int64) (bool, int64) {
	if dm, ok := f.(block.DataMapper); ok {
		if data, k, err := dm.DataRun(off, n); err == nil && k > 0 {
			return data, min(k, n)
		}
	}
	return true, n
}

// status is the extent at off (< size), at most n bytes, before merging
// (KD5).
func (d *Disk) status(off, n int64) (Extent, error) {
	e := d.find(off)
	kind, host, k, err := e.lookup(off, n)
	if err != nil {
		return Extent{}, err
	}
	switch {
	case kind == unalloc:
		return Extent{Start: off, Length: k, Zero: true, Offset: -1}, nil
	case kind == zeroed:
		return Extent{Start: off, Length: k, Present: true, Zero: true, Offset: -1}, nil
	case e.flat:
		data, k := fileRun(e.file, host, k)
		// BDRV_BLOCK_RECURSE: the file's hole is zero, still data.
		return Extent{Start: off, Length: k, Present: true, Data: true, Zero: !data, Offset: host, File: e.name}, nil
	case e.layout.Compressed:
		return Extent{Start: off, Length: k, Present: true, Data: true, Compressed: true, Offset: -1}, nil
	}
	return Extent{Start: off, Length: k, Present: true, Data: true, Offset: host, File: e.name}, nil
}

// statusAbove is status through the parent chain as qemu-img map walks
// it (KD6): a run unallocated here has the parent's status, one layer
// deeper; one past the parent's end stays this layer's unallocated zeros
// (QEMU's bdrv_co_block_status adds ZERO there, and map stops).
func (d *Disk) statusAbove(off, n int64) (Extent, error) {
	e, err := d.status(off, n)
	if err != nil || e.Present || d.parent == nil || off >= d.parent.size {
		return e, err
	}
	pe, err := d.parent.statusAbove(off, min(e.Length, d.parent.size-off))
	pe.Depth++
	return pe, err
}

// Map returns qemu-img map's extents of the whole disk, through its
// parent chain (KD6): runs of one status, neighbours merged where
// nothing but their place differs (and their host offsets, if any, are
// contiguous in one file), as qemu-img map merges them (KD5).
func (d *Disk) Map() ([]Extent, error) {
	if d.Closed() {
		return nil, block.ErrClosed
	}
	var out []Extent
	for off := int64(0); off < d.size; {
		e, err := d.statusAbove(off, d.size-off)
		if err != nil {
			return nil, err
		}
		off += e.Length
		if k := len(out); k > 0 {
			p := &out[k-1]
			contig := (p.Offset < 0 && e.Offset < 0) || (p.Offset >= 0 && e.Offset == p.Offset+p.Length && p.File == e.File)
			if p.Present == e.Present && p.Zero == e.Zero && p.Data == e.Data && p.Compressed == e.Compressed && p.Depth == e.Depth && contig {
				p.Length += e.Length
				continue
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// maxMerge bounds the lookups one Status call merges.
const maxMerge = 1 << 14

// Status is the status of the disk at off: an extent of at most n
// bytes, runs without a host offset and of one kind merged (KD5). Past
// the size it is zero, not data, for n bytes; so is an unallocated run
// that reaches the size.
func (d *Disk) Status(off, n int64) (Extent, error) {
	if d.Closed() {
		return Extent{}, block.ErrClosed
	}
	if err := block.CheckRange(off, n); err != nil {
		return Extent{}, err
	}
	if off >= d.size {
		return Extent{Start: off, Length: n, Zero: true, Offset: -1}, nil
	}
	e, err := d.status(off, min(n, d.size-off))
	if err != nil {
		return Extent{}, err
	}
	// Merging stops after maxMerge lookups: a shorter extent is still
	// true, and a request costs a bounded number of table reads.
	for i := 0; i < maxMerge && e.Offset < 0 && off+e.Length < min(d.size, off+n); i++ {
		nx, err := d.status(off+e.Length, min(n, d.size-off)-e.Length)
		if err != nil || nx.Offset >= 0 || nx.Present != e.Present || nx.Zero != e.Zero || nx.Data != e.Data {
			break
		}
		e.Length += nx.Length
	}
	if !e.Present && off+e.Length >= d.size {
		e.Length = n // a hole that runs to the end
	}
	return e, nil
}

// StatusAbove is Status through the parent chain as QEMU's
// bdrv_block_status_above gives it (qemu-nbd's block status, KD6): a
// run that Status finds unallocated gets the parent's status (Depth 1
// and up); past the parent's end it is zero and allocated in the parent
// (Present, Depth 1), as QEMU treats a short backing file.
func (d *Disk) StatusAbove(off, n int64) (Extent, error) {
	e, err := d.Status(off, n)
	if err != nil || e.Present || d.parent == nil || off >= d.size {
		return e, err
	}
	k := min(e.Length, d.size-off)
	if off >= d.parent.size {
		return Extent{Start: off, Length: k, Present: true, Zero: true, Offset: -1, Depth: 1}, nil
	}
	pe, err := d.parent.StatusAbove(off, min(k, d.parent.size-off))
	pe.Depth++
	return pe, err
}

// DataRun implements block.DataMapper in guest offsets, for the users of
// raw devices' holes (qimg convert and compare): a run is data where
// StatusAbove says data that is not zero (KD5, KD6).
func (d *Disk) DataRun(off, n int64) (bool, int64, error) {
	e, err := d.StatusAbove(off, n)
	if err != nil {
		return false, 0, err
	}
	return e.Data && !e.Zero, e.Length, nil
}

// AllocatedSize implements block.DataMapper: the image file's.
func (d *Disk) AllocatedSize() (int64, error) {
	if dm, ok := d.file.(block.DataMapper); ok {
		return dm.AllocatedSize()
	}
	return d.file.Size()
}
