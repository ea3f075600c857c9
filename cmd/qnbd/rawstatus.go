package main

import (
	"syscall"

	"github.com/qring/qring/nbd"
)

// lseek(2) whences for sparse files.
const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// rawStatus reports a raw image's holes from the host file, as qimg map
// and qemu-nbd do: data where SEEK_DATA finds it, holes (reading as
// zeros) elsewhere. Every byte of a raw file belongs to its only layer:
// depth 1 ("qemu:allocation-depth").
type rawStatus struct{ fd int }

// Extent implements nbd.StatusSource.
func (r rawStatus) Extent(off, n int64) (nbd.Extent, error) {
	end := off + n
	d, err := syscall.Seek(r.fd, off, seekData)
	if err != nil || d >= end {
		// ENXIO: no data from off to the end of the file.
		return nbd.Extent{Len: n, Hole: true, Zero: true, Depth: 1}, nil
	}
	if d > off {
		return nbd.Extent{Len: d - off, Hole: true, Zero: true, Depth: 1}, nil
	}
	h, err := syscall.Seek(r.fd, off, seekHole)
	if err != nil || h <= off || h > end {
		h = end
	}
	return nbd.Extent{Len: h - off, Depth: 1}, nil
}
