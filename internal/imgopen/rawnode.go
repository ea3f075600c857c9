package imgopen

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vmdk"
)

// RawNode finds the qcow2 node under a stack of raw format nodes (zero or
// more filter.Raw windows, as a spec's driver=raw,file.driver=qcow2
// builds): it returns the node's image and where the outermost window
// starts on it (the windows' offsets added up), or nil when dev is
// anything else. QEMU's raw driver passes block status through to its
// child (BDRV_BLOCK_RAW), so qemu-nbd reports such a stack's holes and
// allocation depth from the qcow2 node; a plain device would report data
// everywhere.
func RawNode(dev block.Device) (im *qcow2.Image, off int64) {
	dev, off = RawStack(dev)
	if im = imageOf(dev); im == nil {
		return nil, 0
	}
	return im, off
}

// RawStack unwraps a stack of raw format nodes (zero or more filter.Raw
// windows): the device under them and where the outermost window starts
// on it (the windows' offsets added up); dev itself and 0 when it is
// not a raw node.
func RawStack(dev block.Device) (block.Device, int64) {
	var off int64
	for {
		r, ok := dev.(*filter.Raw)
		if !ok {
			return dev, off
		}
		off += r.Offset()
		dev = r.Unwrap()
	}
}

// RawNodeLayer is a stack of raw format nodes over a format node (qcow2,
// VMDK, VHD) as a qcow2.Layer: QEMU's raw driver answers block status
// with BDRV_BLOCK_RAW and the block layer asks the child node for its
// own status (bdrv_co_block_status, not its backing chain's) at the
// window's offset, so the raw node's status is the child node's: its
// unallocated runs stay unallocated (neither data nor zero where a
// backing file would supply the data) and nothing lies below the raw
// node. ok is false when dev is no such stack (a plain device, a raw
// window over a file: its holes are its status).
func RawNodeLayer(dev block.Device) (l qcow2.Layer, ok bool) {
	child, off := RawStack(dev)
	if child == dev {
		return nil, false
	}
	var c block.Device
	switch x := child.(type) {
	case *qcow2.Image:
		c = x
	case *vmdk.Disk:
		c = vmdkNodeLayer{vmdkLayer{x}}
	case *vhd.Disk:
		c = vhdLayer{x}
	default:
		return nil, false
	}
	return rawNodeLayer{Device: dev, child: qcow2.NewStatusWalker(c), off: off}, true
}

// vmdkNodeLayer is a VMDK node under a raw node: vmdkLayer, but with
// QEMU's answers' lengths where a grain is left to a parent (one grain
// per answer, zero or not by its start), which decide where the zeros
// past a shorter parent begin.
type vmdkNodeLayer struct{ vmdkLayer }

// LayerStatus implements qcow2.Layer.
func (l vmdkNodeLayer) LayerStatus(off, n int64) (qcow2.LayerStatus, error) {
	p := l.Parent()
	if p == nil {
		return l.vmdkLayer.LayerStatus(off, n)
	}
	e, err := l.Status(off, n)
	if err != nil {
		return qcow2.LayerStatus{}, err
	}
	s := qcow2.LayerStatus{Len: min(e.Length, n), Allocated: e.Present, Data: e.Data, Zero: e.Zero, Offset: e.Offset, File: e.File}
	if !e.Present {
		psize, err := p.Size()
		if err != nil {
			return qcow2.LayerStatus{}, err
		}
		if end := VMDKGrainEnd(l.Disk, psize); off < end {
			s.Len, s.Zero = min(s.Len, end-off), false
		}
	}
	return s, nil
}

// VMDKGrainEnd is pos rounded up to d's grain (its first extent's; pos
// itself for a flat one): where QEMU's vmdk, answering block status a
// grain at a time, starts an answer at or past pos.
func VMDKGrainEnd(d *vmdk.Disk, pos int64) int64 {
	if ex := d.Extents(); len(ex) > 0 && ex[0].ClusterSize > 0 {
		g := ex[0].ClusterSize
		return (pos + g - 1) / g * g
	}
	return pos
}

// rawNodeLayer is RawNodeLayer's layer: the raw node (its size and
// contents) with its child's status walker.
type rawNodeLayer struct {
	block.Device
	child *qcow2.StatusWalker
	off   int64 // where the window starts on the child
}

// LayerStatus implements qcow2.Layer: the child's own status at
// off+l.off (Offset only says whether QEMU's answer has a host offset).
func (l rawNodeLayer) LayerStatus(off, n int64) (qcow2.LayerStatus, error) {
	s, err := l.child.TopStatus(l.off+off, n)
	if err != nil {
		return qcow2.LayerStatus{}, err
	}
	if s.Len <= 0 {
		// Past the child's end (a window sized in sectors over an odd
		// size): zeros no layer has.
		return qcow2.LayerStatus{Len: n, Zero: true, Offset: -1}, nil
	}
	ls := qcow2.LayerStatus{Len: min(s.Len, n), Allocated: s.Allocated, Data: s.Data, Zero: s.Zero, Offset: -1}
	if s.OffsetValid {
		ls.Offset = l.off + off
	}
	return ls, nil
}

// LayerBacking implements qcow2.Layer: a raw node has no backing file
// (the child's chain is the child's).
func (rawNodeLayer) LayerBacking() block.Device { return nil }
