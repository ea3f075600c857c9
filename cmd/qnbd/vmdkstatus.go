package main

import (
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/vmdk"
)

// vmdkStatus reports a VMDK image's allocation as qemu-nbd does (vmdk's
// KD5): an unallocated grain is a hole that reads as zeros, a zeroed
// grain reads as zeros; a flat extent's host holes read as zeros but
// are data (QEMU's BDRV_BLOCK_RECURSE). The image is its only layer:
// depth 1.
type vmdkStatus struct{ d *vmdk.Disk }

// Extent implements nbd.StatusSource.
func (v vmdkStatus) Extent(off, n int64) (nbd.Extent, error) {
	e, err := v.d.Status(off, n)
	if err != nil {
		return nbd.Extent{}, err
	}
	return nbd.Extent{Len: e.Length, Hole: !e.Data, Zero: e.Zero, Depth: 1}, nil
}
