package qcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Status is the allocation state of a guest range in one layer.
type Status struct {
	Off, Len   int64
	Allocated  bool  // this layer decides the contents
	Zero       bool  // reads as zeros
	Data       bool  // backed by host data in this layer
	Compressed bool  //
	HostOff    int64 // host offset of the data (Data && !Compressed), else -1
}

// BlockStatus describes [off, off+n) starting at off in this image only:
// the returned Status covers a prefix of the range with one state.
func (im *Image) BlockStatus(off, n int64) (Status, error) {
	if err := block.CheckRange(off, n); err != nil {
		return Status{}, err
	}
	m, err := im.mapRunGated(guestOff(off), uint64(n))
	if err != nil {
		return Status{}, err
	}
	s := Status{Off: off, Len: int64(m.length), HostOff: -1}
	switch m.kind {
	case format.ClusterNormal:
		s.Allocated, s.Data, s.HostOff = true, true, int64(m.host)
	case format.ClusterZeroPlain:
		s.Allocated, s.Zero = true, true
		if uint64(off) >= im.vsize.Load() {
			s.Allocated = false
		}
	case format.ClusterZeroAlloc:
		// Preallocated zeros: qemu-img map shows the offset with
		// data:false.
		s.Allocated, s.Zero, s.HostOff = true, true, int64(m.host)
	case format.ClusterCompressed:
		s.Allocated, s.Data, s.Compressed = true, true, true
	case format.ClusterUnallocated:
		s.Zero = im.backing == nil
		if m.host != 0 {
			// Extended L2: an unallocated subcluster of an allocated
			// cluster keeps its offset (QEMU's block status).
			s.HostOff = int64(m.host)
		}
	}
	return s, nil
}

// MapEntry is one element of qemu-img map --output=json.
type MapEntry struct {
	Start      int64  `json:"start"`
	Length     int64  `json:"length"`
	Depth      int    `json:"depth"`
	Present    bool   `json:"present"`
	Zero       bool   `json:"zero"`
	Data       bool   `json:"data"`
	Compressed bool   `json:"compressed"`
	Offset     *int64 `json:"offset,omitempty"`
}

// Map walks the backing chain like qemu-img map and returns merged
// extents covering the whole virtual disk.
func (im *Image) Map() ([]MapEntry, error) {
	size, err := im.Size()
	if err != nil {
		return nil, err
	}
	var out []MapEntry
	add := func(e MapEntry) {
		if k := len(out); k > 0 {
			p := &out[k-1]
			contig := (p.Offset == nil && e.Offset == nil) ||
				(p.Offset != nil && e.Offset != nil && *p.Offset+p.Length == *e.Offset)
			if p.Start+p.Length == e.Start && p.Depth == e.Depth && p.Present == e.Present &&
				p.Zero == e.Zero && p.Data == e.Data && p.Compressed == e.Compressed && contig {
				p.Length += e.Length
				return
			}
		}
		out = append(out, e)
	}
	for off := int64(0); off < size; {
		e, err := statusChain(im, off, size-off, 0)
		if err != nil {
			return nil, err
		}
		add(e)
		off += e.Length
	}
	return out, nil
}

// statusChain resolves one extent through the chain starting at d.
func statusChain(d block.Device, off, n int64, depth int) (MapEntry, error) {
	im, ok := d.(*Image)
	if !ok {
		// A raw file: data where the file has bytes, zeros past its end.
		sz, err := d.Size()
		if err != nil {
			return MapEntry{}, err
		}
		if off >= sz {
			return MapEntry{Start: off, Length: n, Depth: depth, Zero: true}, nil
		}
		o := off
		return MapEntry{Start: off, Length: min(n, sz-off), Depth: depth, Present: true, Data: true, Offset: &o}, nil
	}
	s, err := im.BlockStatus(off, n)
	if err != nil {
		return MapEntry{}, err
	}
	// Past the end of a shorter backing file the range reads as zeros
	// and QEMU's block status says so at this layer (depth 0 for the
	// top), with the offset of an unallocated subcluster if it has one.
	if s.Allocated || im.backing == nil || off >= im.bsize {
		e := MapEntry{Start: off, Length: s.Len, Depth: depth, Present: s.Allocated, Zero: s.Zero || !s.Allocated, Data: s.Data, Compressed: s.Compressed}
		if s.HostOff >= 0 && im.crypt == nil { // QEMU shows no offsets of encrypted data
			h := s.HostOff
			e.Offset = &h
		}
		return e, nil
	}
	e, err := statusChain(im.backing, off, min(s.Len, im.bsize-off), depth+1)
	return e, err
}
