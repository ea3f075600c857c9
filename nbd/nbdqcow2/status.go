// Package nbdqcow2 lets the NBD server report a qcow2 image's allocation:
// Status adapts a *qcow2.Image to nbd.StatusSource through the engine's
// BlockStatus, walking the backing chain as qemu-img map does. It is a
// package of its own so that package nbd depends on block only.
package nbdqcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/qcow2"
)

// Status reports the allocation of Image and its backing chain.
//
// For "base:allocation" (what qemu-nbd reports): a range backed by data
// in the layer that decides it (a data or compressed cluster, or a raw
// backing file's bytes outside its host holes) is data, and reads as
// zeros too where the image looks metadata-preallocated and the host
// file has a hole under it (qcow2.Image.HostHoles); zero clusters, preallocated zero
// clusters and ranges unallocated throughout the chain are
// NBD_STATE_HOLE|NBD_STATE_ZERO. A range unallocated in the whole chain
// over a backing file reads as zeros only when no backing layer has it.
//
// For "qemu:allocation-depth": 1 where the image itself allocates the
// range (data or zero clusters), 2 and up where a backing layer does
// (past the end of a shorter backing layer, that layer, whose zeros the
// range reads), 0 where none does.
type Status struct{ Image *qcow2.Image }

var _ nbd.StatusSource = Status{}

// Extent implements nbd.StatusSource.
func (s Status) Extent(off, n int64) (nbd.Extent, error) {
	return extent(s.Image, off, n, 1)
}

func extent(d block.Device, off, n int64, depth int) (nbd.Extent, error) {
	if l, ok := d.(qcow2.Layer); ok {
		return layerExtent(l, off, n, depth)
	}
	im, ok := d.(*qcow2.Image)
	if !ok {
		// A raw layer: its bytes are data, except in the host file's
		// holes (block.ZeroRun: a file's read as zeros, an export's
		// say whether they do); all of it is the layer's (allocation
		// depth) but an export's hole not known to read as zeros,
		// which is absent, as in qemu-nbd.
		sz, err := d.Size()
		if err != nil {
			return nbd.Extent{}, err
		}
		sz = qcow2.RawLen(sz)
		if off >= sz {
			return nbd.Extent{Len: n, Hole: true, Zero: true}, nil
		}
		e := nbd.Extent{Len: min(n, sz-off), Depth: depth}
		if dm, ok := d.(block.DataMapper); ok {
			if data, zero, run, err := block.ZeroRun(dm, off, e.Len); err == nil && run > 0 {
				e.Len, e.Hole, e.Zero = run, !data, zero
				if !data && !zero {
					e.Depth = 0
				}
			}
		}
		return e, nil
	}
	st, err := im.BlockStatus(off, n)
	if err != nil {
		return nbd.Extent{}, err
	}
	st = im.HostHoles(st) // as qemu-nbd: zeros where preallocated metadata maps a host hole
	if st.Allocated {
		return nbd.Extent{Len: st.Len, Hole: !st.Data, Zero: st.Zero, Depth: depth}, nil
	}
	return below(im.Backing(), off, st.Len, depth)
}

// below is the extent of [off, off+n), unallocated in the layer at depth,
// from b, the layer below it (nil: none).
func below(b block.Device, off, n int64, depth int) (nbd.Extent, error) {
	if b == nil {
		return nbd.Extent{Len: n, Hole: true, Zero: true}, nil
	}
	bs, err := b.Size()
	if err != nil {
		return nbd.Extent{}, err
	}
	_, isImage := b.(*qcow2.Image)
	if _, isLayer := b.(qcow2.Layer); !isImage && !isLayer {
		bs = qcow2.RawLen(bs)
	}
	if off >= bs {
		// Past the end of the backing file: reads as zeros, which the
		// short layer provides (qemu's block status counts them as
		// allocated there: its depth).
		return nbd.Extent{Len: n, Hole: true, Zero: true, Depth: depth + 1}, nil
	}
	return extent(b, off, min(n, bs-off), depth+1)
}

// layerExtent is extent for a backing layer of another format (a VMDK
// or VHD image, qcow2's Layer): its own status where it decides the
// contents, else the layer below's; past the end of a shorter layer
// below, zeros that layer provides (its depth).
func layerExtent(l qcow2.Layer, off, n int64, depth int) (nbd.Extent, error) {
	sz, err := l.Size()
	if err != nil {
		return nbd.Extent{}, err
	}
	if off >= sz {
		return nbd.Extent{Len: n, Hole: true, Zero: true}, nil
	}
	st, err := l.LayerStatus(off, min(n, sz-off))
	if err != nil {
		return nbd.Extent{}, err
	}
	if st.Allocated {
		return nbd.Extent{Len: st.Len, Hole: !st.Data, Zero: st.Zero, Depth: depth}, nil
	}
	return below(l.LayerBacking(), off, st.Len, depth)
}
