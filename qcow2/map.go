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
		return Status{}, im.signal(err)
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
		if m.host != 0 || m.entry.AllocatedAtZero(im.df.ext) {
			// Extended L2: an unallocated subcluster of an allocated
			// cluster keeps its offset (QEMU's block status), 0 in
			// guest cluster 0 of a data file (DF2).
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
	// File names the file Offset lies in when a Layer says it (a VMDK
	// extent file); "" means the layer's own file, which the caller
	// names by Depth.
	File string `json:"-"`
}

// Map walks the backing chain like qemu-img map and returns merged
// extents covering the whole virtual disk. Where QEMU would look at the
// host file's holes (hostHoles), data in a hole shows as zero. With an
// error come the extents that were complete before it, those qemu-img
// map prints before it fails (all but the one it was still extending).
func (im *Image) Map() ([]MapEntry, error) {
	size, err := im.Size()
	if err != nil {
		return nil, err
	}
	return im.MapRange(0, size)
}

// MapRange is Map of [from, to) only, as qemu-img map --start-offset and
// --max-length ask: what lies outside is not looked at (an unreadable
// table there fails nothing).
func (im *Image) MapRange(from, to int64) ([]MapEntry, error) {
	m := mapper{holes: map[*Image]bool{}}
	return mapRange(from, to, func(off, n int64) (MapEntry, error) {
		return m.statusChain(im, off, n, 0)
	})
}

// MapRaw is Map for a raw device: data where the host stores bytes,
// zeros in its holes (block.DataMapper), as qemu-img map shows a raw
// file.
func MapRaw(d block.Device) ([]MapEntry, error) {
	size, err := d.Size()
	if err != nil {
		return nil, err
	}
	return mapExtents(size, func(off, n int64) (MapEntry, error) {
		return rawStatus(d, off, n, 0)
	})
}

// NodeMap is Map of [from, to) for the image alone, as a node over it
// sees its status (QEMU's raw driver passes its child's status through,
// BDRV_BLOCK_RAW, and qemu-img map then walks no backing chain): where
// the image allocates nothing and a backing file would supply the data,
// an extent is neither present, nor zero, nor data; past a shorter
// backing file's end (as block status is asked from the extent's start)
// and without one it reads as zeros, as in Map.
//
// Whether such an extent reads as zeros is decided where QEMU asks: at
// the start of each of its block status answers, which run over
// clusters of one kind up to the end of an L2 table (the default L2
// slice), so an answer that starts before the backing file's end covers
// what lies past it too.
func (im *Image) NodeMap(from, to int64) ([]MapEntry, error) {
	m := mapper{holes: map[*Image]bool{}}
	cover := int64(im.g.ClusterSize * im.g.L2Entries) // guest bytes of one L2 table
	return mapRange(from, to, func(off, n int64) (MapEntry, error) {
		s, err := im.BlockStatus(off, n)
		if err != nil {
			return MapEntry{}, err
		}
		if s.Allocated || im.backing == nil || s.HostOff >= 0 {
			return m.statusChain(im, off, n, 0)
		}
		// One answer of QEMU's: the unallocated clusters up to the end
		// of the L2 table (BlockStatus stops earlier).
		e := MapEntry{Start: off, Length: s.Len, Zero: off >= im.bsize}
		end := min(off+n, (off/cover+1)*cover)
		for e.Start+e.Length < end {
			s, err := im.BlockStatus(e.Start+e.Length, end-e.Start-e.Length)
			if err != nil {
				return MapEntry{}, err
			}
			if s.Allocated || s.HostOff >= 0 {
				break
			}
			e.Length += s.Len
		}
		return e, nil
	})
}

// mapExtents covers [0, size) with the extents next returns, merging
// neighbours that differ in nothing but their place, as qemu-img map
// does. When next fails, the extents complete before it come back with
// the error: the last one might have gone on, and is left out.
func mapExtents(size int64, next func(off, n int64) (MapEntry, error)) ([]MapEntry, error) {
	return mapRange(0, size, next)
}

// mapRange is mapExtents over [from, to).
func mapRange(from, to int64, next func(off, n int64) (MapEntry, error)) ([]MapEntry, error) {
	var out []MapEntry
	for off := from; off < to; {
		e, err := next(off, to-off)
		if err != nil {
			// Not nil, even empty: what was mapped before the error.
			return append([]MapEntry{}, out[:max(len(out)-1, 0)]...), err
		}
		off += e.Length
		if k := len(out); k > 0 {
			p := &out[k-1]
			contig := (p.Offset == nil && e.Offset == nil) ||
				(p.Offset != nil && e.Offset != nil && *p.Offset+p.Length == *e.Offset)
			if p.Start+p.Length == e.Start && p.Depth == e.Depth && p.Present == e.Present &&
				p.Zero == e.Zero && p.Data == e.Data && p.Compressed == e.Compressed && p.File == e.File && contig {
				p.Length += e.Length
				continue
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// mapper resolves extents through a chain for Map, remembering for each
// image whether its host file's holes count (hostHoles).
type mapper struct {
	holes map[*Image]bool
}

// statusChain resolves one extent through the chain starting at d.
func (m *mapper) statusChain(d block.Device, off, n int64, depth int) (MapEntry, error) {
	if l, ok := d.(Layer); ok {
		return m.layerChain(l, off, n, depth)
	}
	im, ok := d.(*Image)
	if !ok {
		return rawStatus(d, off, n, depth)
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
		if e.Data && e.Offset != nil && m.hostHoles(im) {
			if d, err := im.dataDev(); err == nil { // DF1: the data file's holes
				hostRun(d, &e)
			}
		}
		return e, nil
	}
	return m.statusChain(im.backing, off, min(s.Len, im.bsize-off), depth+1)
}

// layerChain is statusChain for a Layer (Q23): its own status where it
// decides the contents, has nothing below or off lies past the end of
// what is below, else the layer below's.
func (m *mapper) layerChain(l Layer, off, n int64, depth int) (MapEntry, error) {
	size, err := l.Size()
	if err != nil {
		return MapEntry{}, err
	}
	if off >= size {
		return MapEntry{Start: off, Length: n, Depth: depth, Zero: true}, nil
	}
	s, err := l.LayerStatus(off, min(n, size-off))
	if err != nil {
		return MapEntry{}, err
	}
	b := l.LayerBacking()
	bsize := int64(0)
	if b != nil {
		if bsize, err = b.Size(); err != nil {
			return MapEntry{}, err
		}
	}
	if s.Allocated || b == nil || off >= bsize {
		e := MapEntry{Start: off, Length: s.Len, Depth: depth, Present: s.Allocated, Zero: s.Zero || !s.Allocated, Data: s.Data, File: s.File}
		if s.Offset >= 0 {
			h := s.Offset
			e.Offset = &h
		}
		return e, nil
	}
	return m.statusChain(b, off, min(s.Len, bsize-off), depth+1)
}

// rawStatus is a raw file's extent: data where the host stores bytes,
// zeros in holes (when the device can tell, block.DataMapper) and past
// its end. Like QEMU's file driver, a hole keeps its offset.
func rawStatus(d block.Device, off, n int64, depth int) (MapEntry, error) {
	sz, err := d.Size()
	if err != nil {
		return MapEntry{}, err
	}
	sz = sectorLen(sz)
	if off >= sz {
		return MapEntry{Start: off, Length: n, Depth: depth, Zero: true}, nil
	}
	o := off
	e := MapEntry{Start: off, Length: min(n, sz-off), Depth: depth, Present: true, Data: true, Offset: &o}
	data, zero := hostRun(d, &e)
	// A hole not known to read as zeros (an NBD export's hole without
	// its zero flag) is not allocated at this layer either, as QEMU's
	// block status: neither data nor zero, and no offset.
	e.Data, e.Present = data, data || zero
	if !e.Present {
		e.Offset = nil
	} else if w := windowOffset(d); w != 0 {
		// A window into its file (filter.Raw): the file's offsets, for
		// a raw top and a raw backing file alike.
		v := o + w
		e.Offset = &v
	}
	return e, nil
}

// windowOffset is where d's bytes start in the host file under it: the
// offsets of the raw windows (filter.Raw) it stacks, through the
// devices that wrap one (Unwrap), as QEMU's raw driver passes the file's
// offsets up (BDRV_BLOCK_RAW).
func windowOffset(d block.Device) int64 {
	var off int64
	for d != nil {
		if w, ok := d.(interface{ Offset() int64 }); ok {
			off += w.Offset()
		}
		u, ok := d.(interface{ Unwrap() block.Device })
		if !ok {
			break
		}
		d = u.Unwrap()
	}
	return off
}

// hostRun asks d, when it is a block.DataMapper, whether the host bytes
// under e (at *e.Offset) are data or a hole and whether they read as
// zeros (block.ZeroRun: a file's hole does, an NBD export says so with
// its zero flag, data included, as QEMU's block status), and cuts e to
// the run that shares the first byte's state; zeros set Zero. It returns
// the run's data and zero answers (data, not known zero, when d cannot
// tell). Errors are ignored: this only refines what the image already
// says, as in QEMU.
func hostRun(d block.Device, e *MapEntry) (data, zero bool) {
	dm, ok := d.(block.DataMapper)
	if !ok {
		return true, false
	}
	data, zero, n, err := block.ZeroRun(dm, *e.Offset, e.Length)
	if err != nil || n <= 0 {
		return true, false
	}
	e.Length = n
	e.Zero = e.Zero || zero
	return data, zero
}
