package vhd

import (
	"github.com/qring/qring/block"
)

// Extent is one run of qemu-img map's output for the disk (VD5).
type Extent struct {
	Start, Length int64
	Zero, Data    bool
	// Offset is the host offset of Start, -1 when there is none (an
	// unallocated block).
	Offset int64
}

// fileRun is the file's data/hole run at off (at most n bytes): data,
// as QEMU's file driver says when it cannot tell, when the file is no
// block.DataMapper or errs.
func (d *Disk) fileRun(off, n int64) (bool, int64) {
	if dm, ok := d.file.(block.DataMapper); ok {
		if data, k, err := dm.DataRun(off, n); err == nil && k > 0 {
			return data, min(k, n)
		}
	}
	return true, n
}

// status is the extent at off, at most n bytes, before merging (VD5).
func (d *Disk) status(off, n int64) Extent {
	host, k := d.hostOff(off, n)
	if d.fixed && host >= 0 {
		data, k := d.fileRun(host, k)
		// BDRV_BLOCK_RECURSE: the file's hole is zero, still data.
		return Extent{Start: off, Length: k, Data: true, Zero: !data, Offset: host}
	}
	if host >= 0 {
		return Extent{Start: off, Length: k, Data: true, Offset: host}
	}
	return Extent{Start: off, Length: k, Zero: true, Offset: -1}
}

// Map returns qemu-img map's extents of the whole disk: runs of one
// status, neighbours merged where nothing but their place differs (and
// their host offsets, if any, are contiguous), as qemu-img map merges
// them (VD5).
func (d *Disk) Map() ([]Extent, error) {
	if d.Closed() {
		return nil, block.ErrClosed
	}
	var out []Extent
	for off := int64(0); off < d.size; {
		e := d.status(off, d.size-off)
		off += e.Length
		if k := len(out); k > 0 {
			p := &out[k-1]
			contig := (p.Offset < 0 && e.Offset < 0) || (p.Offset >= 0 && e.Offset == p.Offset+p.Length)
			if p.Zero == e.Zero && p.Data == e.Data && contig {
				p.Length += e.Length
				continue
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// Status is the status of the disk at off: an extent of at most n
// bytes, unallocated blocks in a row as one (VD5). Past the size it is
// zero, not data, with no offset, for n bytes; so is an unallocated run
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
	e := d.status(off, n)
	for e.Offset < 0 && off+e.Length < min(d.size, off+n) {
		nx := d.status(off+e.Length, n-e.Length)
		if nx.Offset >= 0 {
			break
		}
		e.Length += nx.Length
	}
	if e.Offset < 0 && off+e.Length >= d.size {
		e.Length = n // a hole that runs to the end
	}
	return e, nil
}

// DataRun implements block.DataMapper in guest offsets, for the users of
// raw devices' holes (qimg convert and compare): a run is data where
// Status says data that is not zero (VD5).
func (d *Disk) DataRun(off, n int64) (bool, int64, error) {
	e, err := d.Status(off, n)
	if err != nil {
		return false, 0, err
	}
	return e.Data && !e.Zero, e.Length, nil
}

// AllocatedSize implements block.DataMapper: the file's.
func (d *Disk) AllocatedSize() (int64, error) {
	if dm, ok := d.file.(block.DataMapper); ok {
		return dm.AllocatedSize()
	}
	return d.file.Size()
}
