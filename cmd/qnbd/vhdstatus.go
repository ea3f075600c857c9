package main

import (
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/vhd"
)

// vhdStatus reports a VHD image's allocation as qemu-nbd does (vhd's
// VD5): an unallocated block is a hole that reads as zeros; a fixed
// disk's host holes read as zeros but are data (QEMU's
// BDRV_BLOCK_RECURSE), so no hole. The image is its only layer: depth 1.
type vhdStatus struct{ d *vhd.Disk }

// Extent implements nbd.StatusSource.
func (v vhdStatus) Extent(off, n int64) (nbd.Extent, error) {
	e, err := v.d.Status(off, n)
	if err != nil {
		return nbd.Extent{}, err
	}
	return nbd.Extent{Len: e.Length, Hole: !e.Data, Zero: e.Zero, Depth: 1}, nil
}
