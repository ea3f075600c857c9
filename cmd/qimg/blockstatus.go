package main

import (
	"fmt"

	"github.com/qring/qring/qcow2"
)

// QEMU's block status bits (include/block/block-common.h), as
// qemu-img compare -s compares them.
const (
	statusData      = 0x01 // BDRV_BLOCK_DATA
	statusZero      = 0x02 // BDRV_BLOCK_ZERO
	statusOffset    = 0x04 // BDRV_BLOCK_OFFSET_VALID
	statusAllocated = 0x10 // BDRV_BLOCK_ALLOCATED
	statusEOF       = 0x20 // BDRV_BLOCK_EOF
)

// statusWord is the word of s as QEMU's bdrv_block_status_above
// returns it.
func statusWord(s qcow2.ChainStatus) int {
	w := 0
	for _, b := range []struct {
		set bool
		bit int
	}{{s.Data, statusData}, {s.Zero, statusZero}, {s.OffsetValid, statusOffset},
		{s.Allocated, statusAllocated}, {s.EOF, statusEOF}} {
		if b.set {
			w |= b.bit
		}
	}
	return w
}

// firstStatusMismatch walks the block status of two disks of size bytes
// together as qemu-img compare -s does: at each offset it asks both
// (bdrv_block_status_above, whole chain), compares the two words, EOF
// included, and moves on by the shorter of the two answers. It returns
// the first offset where the words differ.
func firstStatusMismatch(x, y *qcow2.StatusWalker, size int64) (int64, bool, error) {
	for off := int64(0); off < size; {
		sx, err := x.Status(off, size-off)
		if err != nil {
			return 0, false, err
		}
		sy, err := y.Status(off, size-off)
		if err != nil {
			return 0, false, err
		}
		if statusWord(sx) != statusWord(sy) {
			return off, true, nil
		}
		step := min(sx.Len, sy.Len)
		if step <= 0 {
			// Never expected below both sizes; a hang is worse than an error.
			return 0, false, fmt.Errorf("block status at %d gave no length", off)
		}
		off += step
	}
	return 0, false, nil
}
