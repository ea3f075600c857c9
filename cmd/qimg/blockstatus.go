package main

import "github.com/qring/qring/qcow2"

// QEMU's block status bits (include/block/block-common.h), as
// qemu-img compare -s compares them.
const (
	statusData      = 0x01 // BDRV_BLOCK_DATA
	statusZero      = 0x02 // BDRV_BLOCK_ZERO
	statusOffset    = 0x04 // BDRV_BLOCK_OFFSET_VALID
	statusAllocated = 0x10 // BDRV_BLOCK_ALLOCATED
	statusEOF       = 0x20 // BDRV_BLOCK_EOF
)

// blockStatus is the status qemu's bdrv_block_status_above (through the
// whole backing chain) gives the extent e of a disk of size bytes: the
// map's present, zero and data flags, whether a host offset is known, and
// EOF when the extent reaches the end of the disk. qemu-img compare -s
// compares the whole word, EOF included: an image whose last run of
// unallocated clusters starts earlier than the other's mismatches there.
func blockStatus(e qcow2.MapEntry, size int64) int {
	s := 0
	if e.Data {
		s |= statusData
	}
	if e.Zero {
		s |= statusZero
	}
	if e.Offset != nil {
		s |= statusOffset
	}
	if e.Present {
		s |= statusAllocated
	}
	if e.Start+e.Length >= size {
		s |= statusEOF
	}
	return s
}

// firstStatusMismatch walks two maps of disks of size bytes together
// (each run as long as both extents last, as qemu-img compare's chunks)
// and returns the first offset where the block status differs.
func firstStatusMismatch(x, y []qcow2.MapEntry, size int64) (int64, bool) {
	i, j := 0, 0
	for off := int64(0); off < size; {
		for i < len(x) && x[i].Start+x[i].Length <= off {
			i++
		}
		for j < len(y) && y[j].Start+y[j].Length <= off {
			j++
		}
		if i == len(x) || j == len(y) {
			return off, i < len(x) || j < len(y) // one map ends early
		}
		if blockStatus(x[i], size) != blockStatus(y[j], size) {
			return off, true
		}
		off = min(x[i].Start+x[i].Length, y[j].Start+y[j].Length)
	}
	return 0, false
}
