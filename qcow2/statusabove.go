package qcow2

import "github.com/qring/qring/block"

// ChainStatus is the block status QEMU's bdrv_block_status_above gives
// the start of a range, looked up through the whole backing chain: the
// word qemu-img compare -s compares, and how far it holds (Len).
type ChainStatus struct {
	Len         int64
	Data        bool // BDRV_BLOCK_DATA
	Zero        bool // BDRV_BLOCK_ZERO
	OffsetValid bool // BDRV_BLOCK_OFFSET_VALID
	Allocated   bool // BDRV_BLOCK_ALLOCATED
	EOF         bool // BDRV_BLOCK_EOF
}

// StatusWalker answers block status queries on one device like QEMU's
// bdrv_block_status_above, with the lengths QEMU's drivers give: a qcow2
// layer answers for one run of clusters of one type (host-contiguous
// where they have host clusters) that does not cross the end of an L2
// table (QEMU's default L2 slice), and a compressed cluster alone; a raw
// file answers for one data or hole run of the host file. What EOF says
// depends on those lengths, so two images with the same contents and the
// same map can still differ in their status words.
type StatusWalker struct {
	d block.Device
	m mapper
}

// NewStatusWalker returns a StatusWalker for d: a qcow2 *Image with its
// backing chain, or a raw device.
func NewStatusWalker(d block.Device) *StatusWalker {
	return &StatusWalker{d: d, m: mapper{holes: map[*Image]bool{}}}
}

// Status is bdrv_block_status_above(d, NULL, off, n): the status of
// off through the chain, for a prefix of [off, off+n) (n > 0, off below
// the device's size).
func (w *StatusWalker) Status(off, n int64) (ChainStatus, error) {
	size, err := w.m.qemuLen(w.d)
	if err != nil {
		return ChainStatus{}, err
	}
	s, err := w.m.layerStatus(w.d, off, min(n, size-off))
	if err != nil || s.Allocated {
		return s, err
	}
	// Not allocated at the top: the layers below decide, each asked
	// for what the one above left open (bdrv_co_common_block_status_above).
	eof := int64(-1)
	if s.EOF {
		eof = off + s.Len
	}
	n = s.Len
	for p := backingOf(w.d); p != nil; p = backingOf(p) {
		s, err = w.m.layerStatus(p, off, n)
		if err != nil {
			return ChainStatus{}, err
		}
		if s.Len == 0 {
			// Past the end of a shorter layer: zeros it supplies.
			s = ChainStatus{Len: n, Zero: true, Allocated: true}
			break
		}
		if s.Allocated {
			s.EOF = false
			break
		}
		// Unallocated in this layer too: its EOF stays in the word
		// (QEMU only drops it where a layer has the data).
		n = s.Len
	}
	if off+s.Len == eof {
		s.EOF = true
	}
	return s, nil
}

// TopStatus is bdrv_block_status_above(d, backing of d, off, n): the
// status of off in d's own layer only (as qemu-img convert -B asks it):
// not Allocated where d leaves off to its backing file; where d has no
// backing file, or off lies past its end, that reads as zeros.
func (w *StatusWalker) TopStatus(off, n int64) (ChainStatus, error) {
	size, err := w.m.qemuLen(w.d)
	if err != nil {
		return ChainStatus{}, err
	}
	return w.m.layerStatus(w.d, off, min(n, size-off))
}

// backingOf is the backing device of a qcow2 layer or a Layer, nil for
// raw or the bottom.
func backingOf(d block.Device) block.Device {
	if im, ok := d.(*Image); ok && im.backing != nil {
		return im.backing
	}
	if l, ok := d.(Layer); ok {
		return l.LayerBacking()
	}
	return nil
}

// qemuLen is the size QEMU gives a layer: whole sectors for a raw file.
func (m *mapper) qemuLen(d block.Device) (int64, error) {
	n, err := d.Size()
	_, isImage := d.(*Image)
	if _, isLayer := d.(Layer); !isImage && !isLayer {
		n = sectorLen(n)
	}
	return n, err
}

// layerStatus is QEMU's bdrv_co_block_status of one layer d for
// [off, off+n): Len 0 and EOF when off is at or past its end.
func (m *mapper) layerStatus(d block.Device, off, n int64) (ChainStatus, error) {
	size, err := m.qemuLen(d)
	if err != nil {
		return ChainStatus{}, err
	}
	if off >= size {
		return ChainStatus{EOF: true}, nil
	}
	n = min(n, size-off)
	var s ChainStatus
	if im, ok := d.(*Image); ok {
		s, err = m.qcow2Status(im, off, n)
	} else if l, ok := d.(Layer); ok {
		var ls LayerStatus
		ls, err = l.LayerStatus(off, n)
		s = ChainStatus{Len: ls.Len, Data: ls.Data, Zero: ls.Zero, Allocated: ls.Allocated, OffsetValid: ls.Offset >= 0}
	} else {
		var e MapEntry
		e, err = rawStatus(d, off, n, 0)
		s = ChainStatus{Len: e.Length, Data: e.Data, Zero: e.Zero, OffsetValid: true, Allocated: true}
	}
	if err != nil {
		return ChainStatus{}, err
	}
	s.EOF = off+s.Len == size
	return s, nil
}

// qcow2Status is qcow2_co_block_status with what bdrv_co_block_status
// adds for a format layer (n within the image).
func (m *mapper) qcow2Status(im *Image, off, n int64) (ChainStatus, error) {
	// qcow2_get_host_offset stops at the end of the L2 slice, which is a
	// whole table by default (l2-cache-entry-size: the cluster size).
	cover := int64(im.g.ClusterSize * im.g.L2Entries)
	end := min(off+n, (off/cover+1)*cover)
	st, err := im.BlockStatus(off, end-off)
	if err != nil {
		return ChainStatus{}, err
	}
	// BlockStatus may stop early (a bound on each lookup); the driver
	// counts on while the type and the host contiguity go on
	// (count_contiguous_subclusters). A compressed cluster is alone.
	for !st.Compressed && off+st.Len < end {
		nx, err := im.BlockStatus(off+st.Len, end-off-st.Len)
		if err != nil {
			break // the next query, which starts there, reports it
		}
		if nx.Allocated != st.Allocated || nx.Zero != st.Zero || nx.Data != st.Data || nx.Compressed ||
			(st.HostOff < 0) != (nx.HostOff < 0) || (st.HostOff >= 0 && nx.HostOff != st.HostOff+st.Len) {
			break
		}
		st.Len += nx.Len
	}
	s := ChainStatus{Len: st.Len, Data: st.Data, Zero: st.Zero, Allocated: st.Allocated,
		OffsetValid: st.HostOff >= 0 && !st.Compressed && im.crypt == nil}
	if !s.Allocated {
		// bdrv_co_block_status: unallocated reads as zeros without a
		// backing file, and past the end of a shorter one.
		s.Zero = im.backing == nil || off >= im.bsize
	}
	if s.Data && s.OffsetValid && m.hostHoles(im) {
		// Metadata preallocation: the host file's holes read as zeros
		// (BDRV_BLOCK_RECURSE; QEMU 7.2.22 does not return that bit).
		e := MapEntry{Length: s.Len, Offset: &st.HostOff}
		if d, err := im.dataDev(); err == nil { // DF1: the data file's holes
			hostRun(d, &e)
		}
		s.Len, s.Zero = e.Length, e.Zero
	}
	return s, nil
}
