package main

import (
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/vmdk"
)

// vmdkStatus reports a VMDK image's allocation as qemu-nbd does (vmdk's
// KD5, KD6): an unallocated grain takes its parent's status (a hole that
// reads as zeros without one), a zeroed grain reads as zeros; a flat
// extent's host holes read as zeros but are data (QEMU's
// BDRV_BLOCK_RECURSE). qemu:allocation-depth is the layer that has the
// run (1 the image, 2 its parent...), 0 where none has it.
type vmdkStatus struct{ d *vmdk.Disk }

// Extent implements nbd.StatusSource.
func (v vmdkStatus) Extent(off, n int64) (nbd.Extent, error) {
	e, err := v.d.StatusAbove(off, n)
	if err != nil {
		return nbd.Extent{}, err
	}
	depth := 0
	if e.Present {
		depth = 1 + e.Depth
	}
	return nbd.Extent{Len: e.Length, Hole: !e.Data, Zero: e.Zero, Depth: depth}, nil
}
