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

// Extent implements nbd.StatusSource. It follows QEMU's file-posix
// (find_allocation and raw_co_block_status): only ENXIO means a hole
// (from off to the end of the file, or the file shrank under us); any
// other failure, or an answer lseek may not give, tells nothing, and the
// range is reported as data. Calling a hole data costs a client some
// reads of zeros; calling data a hole would lose it.
func (r rawStatus) Extent(off, n int64) (nbd.Extent, error) {
	end := off + n
	data := nbd.Extent{Len: n, Depth: 1}
	hole := nbd.Extent{Len: n, Hole: true, Zero: true, Depth: 1}
	d, err := syscall.Seek(r.fd, off, seekData)
	switch {
	case err == syscall.ENXIO:
		return hole, nil // a trailing hole
	case err != nil || d < off:
		return data, nil // EIO, ESTALE, ESPIPE...: we learned nothing
	case d > off:
		hole.Len = min(d, end) - off
		return hole, nil
	}
	// off is in data: it runs to the next hole.
	h, err := syscall.Seek(r.fd, off, seekHole)
	switch {
	case err == syscall.ENXIO:
		return hole, nil // off is past the end now: the file shrank
	case err != nil || h <= off:
		return data, nil // nothing learned, or a hole dug since SEEK_DATA
	}
	data.Len = min(h, end) - off
	return data, nil
}
