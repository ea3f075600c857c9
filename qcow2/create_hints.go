package qcow2

import (
	"errors"
	"math"
	"syscall"

	"github.com/qring/qring/block"
)

// FileHints are QEMU's file driver create options, which qemu-img
// create takes for every format: nocow, and extent_size_hint, which
// qemu-img sets on every file it creates (1 MiB unless told otherwise;
// XFS then allocates the file in 1 MiB extents). Create sets them on the
// image file and the data file while each is empty, on devices that take
// them (block.FileHinter).
type FileHints struct {
	// NoCOW turns copy-on-write off (btrfs; ignored elsewhere).
	NoCOW bool
	// ExtentSizeHint in bytes: 0 is QEMU's default, 1 MiB; negative sets
	// no hint (qemu-img's extent_size_hint=0). At most 2^32-1.
	ExtentSizeHint int64
	// Warn, if set, receives QEMU's warning when a hint asked for
	// (ExtentSizeHint > 0) could not be set ("Failed to set extent size
	// hint: Invalid argument"); the default's failure is silent, as
	// QEMU's.
	Warn func(msg string)
}

// DefaultExtentSizeHint is QEMU's extent_size_hint when none is given.
const DefaultExtentSizeHint = 1 << 20

// ErrExtentSizeHint is an extent size hint past 2^32-1, in QEMU's words.
var ErrExtentSizeHint = errors.New("Extent size hint is too large")

// Check refuses a hint QEMU refuses before it creates the file.
func (h FileHints) Check() error {
	if h.ExtentSizeHint > math.MaxUint32 {
		return ErrExtentSizeHint
	}
	return nil
}

// Apply sets the hints on dev, a file just emptied (QEMU's raw_co_create
// sets them after truncating the file to 0 and before growing it).
// Failures are not errors, as for QEMU: a hint asked for is reported to
// Warn.
func (h FileHints) Apply(dev block.Device) {
	fh, ok := dev.(block.FileHinter)
	if !ok {
		return
	}
	if h.NoCOW {
		fh.SetNoCOW()
	}
	n := h.ExtentSizeHint
	if n == 0 {
		n = DefaultExtentSizeHint
	}
	if n < 0 || n > math.MaxUint32 {
		return
	}
	if err := fh.SetExtentSizeHint(uint32(n)); err != nil && h.ExtentSizeHint > 0 && h.Warn != nil {
		msg := err.Error()
		var en syscall.Errno
		if errors.As(err, &en) {
			msg = strerror(en)
		}
		h.Warn("Failed to set extent size hint: " + msg)
	}
}
