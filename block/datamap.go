package block

import (
	"errors"
	"syscall"
)

// DataMapper is a device that can say which of its bytes the host stores
// and which lie in holes (SEEK_DATA and SEEK_HOLE on a file): what QEMU's
// file driver answers under block status, and what qemu-img map and
// measure show as "zero" for data whose host space is a hole. It is a
// report, never a promise about contents beyond B2: a hole reads as
// zeros, data may hold anything, zeros included.
type DataMapper interface {
	// DataRun reports whether off lies in data (false: in a hole) and
	// how many bytes from off, at most n, share that state. At or past
	// the end of the device it is a hole of n bytes, and so is a hole
	// that runs to the end.
	DataRun(off, n int64) (data bool, length int64, err error)
	// AllocatedSize is the space the host has allocated to the device in
	// bytes (st_blocks * 512 for a file).
	AllocatedSize() (int64, error)
}

// ZeroMapper is a DataMapper whose data and zeros are two answers, as an
// NBD export's NBD_STATE_HOLE and NBD_STATE_ZERO: data that reads as
// zeros (QEMU's BDRV_BLOCK_DATA|BDRV_BLOCK_ZERO, which qemu-img map
// shows as "data": true, "zero": true), and a hole that is not known to
// read as zeros (neither flag: the NBD spec does not promise a hole's
// contents, and QEMU reads it). Like DataRun it is a report (B2): zero
// promises zeros, anything else promises nothing. Its DataRun calls a
// range a hole only where it reads as zeros.
type ZeroMapper interface {
	DataMapper
	// ZeroRun is DataRun with the two answers apart: whether the run is
	// data (false: a hole), and whether it reads as zeros.
	ZeroRun(off, n int64) (data, zero bool, length int64, err error)
}

// ZeroRun asks dm for the run at off: a ZeroMapper's answer, else
// DataRun's, where a hole reads as zeros and data may hold anything.
func ZeroRun(dm DataMapper, off, n int64) (data, zero bool, length int64, err error) {
	if zm, ok := dm.(ZeroMapper); ok {
		return zm.ZeroRun(off, n)
	}
	data, length, err = dm.DataRun(off, n)
	return data, !data, length, err
}

// lseek(2) whences for sparse files (Linux).
const (
	seekData = 3 // SEEK_DATA
	seekHole = 4 // SEEK_HOLE
)

// SeekDataRun is DataRun for descriptor fd, with QEMU's file driver's
// rules (find_allocation): only ENXIO means a hole (from off to the end
// of the file, or the file shrank under us); any other failure, or an
// answer lseek may not give, tells nothing, and the range is data.
// Calling a hole data costs a reader some zeros; calling data a hole
// would lose it. The descriptor's offset moves; callers that use pread
// and pwrite do not mind.
func SeekDataRun(fd int, off, n int64) (bool, int64) {
	end := off + n
	d, err := syscall.Seek(fd, off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return false, n // a trailing hole
	case err != nil || d < off:
		return true, n // EIO, ESPIPE...: nothing learned
	case d > off:
		return false, min(d, end) - off
	}
	h, err := syscall.Seek(fd, off, seekHole)
	switch {
	case errors.Is(err, syscall.ENXIO):
		return false, n // off is past the end now: the file shrank
	case err != nil || h <= off:
		return true, n // nothing learned, or a hole dug since
	}
	return true, min(h, end) - off
}

// statAllocated is st_blocks * 512 of descriptor fd.
func statAllocated(fd int) (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
