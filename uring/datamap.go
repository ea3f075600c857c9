package uring

import (
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

var _ block.DataMapper = (*File)(nil)

// DataRun implements block.DataMapper with lseek(SEEK_DATA, SEEK_HOLE);
// requests use pread and pwrite, so the file offset is free. It follows
// QEMU's file driver (find_allocation): only ENXIO means a hole (from off
// to the end of the file, or the file shrank under us); any other
// failure, or an answer lseek may not give, tells nothing, and the range
// is data. Calling a hole data costs a reader some zeros; calling data a
// hole would lose it. A block device is data up to its end.
func (f *File) DataRun(off, n int64) (bool, int64, error) {
	if err := f.enter(); err != nil { // closed first (B7)
		return false, 0, err
	}
	defer f.life.RUnlock()
	if off < 0 || n < 0 || off > off+n {
		return false, 0, block.ErrRange
	}
	if f.direct {
		f.padMu.RLock() // not while a read-modify-write pads the file (U1)
		defer f.padMu.RUnlock()
	}
	data, run := block.SeekDataRun(f.fd, off, n)
	return data, run, nil
}

// AllocatedSize implements block.DataMapper: st_blocks * 512.
func (f *File) AllocatedSize() (int64, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.life.RUnlock()
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, &block.OpError{Op: "stat", Err: err}
	}
	return st.Blocks * 512, nil
}
