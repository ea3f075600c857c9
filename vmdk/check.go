package vmdk

import (
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vmdk/format"
)

// CheckError is a failed check as QEMU's vmdk_co_check ends one: the
// ERROR line it prints, and the errno text qemu-img check then reports
// ("Check failed: ...").
type CheckError struct {
	Line  string
	Errno string
}

func (e *CheckError) Error() string { return e.Line + ": " + e.Errno }

// Check walks the image as QEMU's vmdk_co_check does: one lookup per
// grain (per extent, for a flat one), and an allocated grain whose
// offset is at or past the end of its file is an error. It reads grain
// tables as QEMU does, a table past the end of the file as zeros
// (unallocated grains), where reads fail instead (KD3). nil: no errors.
func (d *Disk) Check() error {
	if d.Closed() {
		return block.ErrClosed
	}
	total := d.size / format.SectorSize
	for sector := int64(0); sector < total; {
		e := d.find(sector * format.SectorSize)
		if e.flat {
			n, err := e.file.Size()
			if err != nil {
				return err
			}
			if e.flatOff >= n {
				return &CheckError{fmt.Sprintf("ERROR: cluster offset for sector %d points after EOF", sector), "Invalid argument"}
			}
			sector += e.size / format.SectorSize
			continue
		}
		host, err := e.grainStart(sector*format.SectorSize - e.start)
		if err != nil {
			// VMDK_ERROR is -1: EPERM's text.
			return &CheckError{fmt.Sprintf("ERROR: could not get cluster_offset for sector %d", sector), "Operation not permitted"}
		}
		if host > 0 {
			n, err := e.file.Size()
			if err != nil {
				return err
			}
			if host >= n {
				return &CheckError{fmt.Sprintf("ERROR: cluster offset for sector %d points after EOF", sector), "Invalid argument"}
			}
		}
		sector += e.layout.GrainSectors
	}
	return nil
}

// grainStart is QEMU's get_cluster_offset for a sparse extent at byte
// rel of it: the grain's start in the file, 0 when unallocated or
// zeroed; an error where QEMU's is VMDK_ERROR. A table past the end of
// the file reads as zeros, as QEMU reads it.
func (e *extent) grainStart(rel int64) (int64, error) {
	l1, l2, ok := e.layout.Index(rel)
	if !ok {
		return 0, fmt.Errorf("vmdk: offset %d past the grain directory: %w", rel, block.ErrRange)
	}
	gt := int64(e.gd[l1])
	if gt == 0 {
		return 0, nil
	}
	var b [4]byte
	if err := block.ReadAt(e.file, b[:], gt*format.SectorSize+4*l2); err != nil {
		return 0, err
	}
	g := int64(format.Entry(b[:], 0))
	if g == 0 || (g == format.GTEZeroed && e.layout.ZeroGrain) {
		return 0, nil
	}
	return g * format.SectorSize, nil
}
