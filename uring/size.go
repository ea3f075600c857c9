package uring

import (
	"errors"
	"io"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// fileSize is the size of the file, or of the block device as it is now
// (U15).
func (f *File) fileSize() (int64, error) {
	if f.blockDev {
		return f.deviceSize()
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

// deviceSize asks a block device for its size (lseek to its end: requests
// use pread and pwrite, so the offset is free; fstat says 0) and keeps
// it for checkDevice. A device that grew (an LVM or loop resize) is seen
// at the next call, as QEMU's host_device reads its length each time.
func (f *File) deviceSize() (int64, error) {
	n, err := unix.Seek(f.fd, 0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	f.devSize.Store(n)
	f.bumpEOF(n)
	return n, nil
}

// checkDevice refuses a write or zeroing reaching past a block device's
// end with ENOSPC (U15), before the kernel sees it: fallocate would say
// EINVAL, which means "mode not supported" for every other file and
// would turn zeroing off for good (U2). The size kept is asked again
// before a refusal, in case the device grew.
func (f *File) checkDevice(op string, off, n int64) error {
	if !f.blockDev || off+n <= f.devSize.Load() {
		return nil
	}
	if size, err := f.deviceSize(); err == nil && off+n <= size {
		return nil
	}
	return &block.OpError{Op: op, Off: off, Len: n, Err: unix.ENOSPC}
}

// errCannotGrow is QEMU's message for the same refusal.
var errCannotGrow = errors.New("Cannot grow device files")

// truncateDevice is Truncate on a block device, as QEMU's host_device:
// a size up to the device's is accepted and changes nothing (the bytes
// past it stay as they are), a larger one is refused (U15).
func (f *File) truncateDevice(size int64) error {
	cur, err := f.deviceSize()
	if err != nil {
		return &block.OpError{Op: "truncate", Off: size, Err: err}
	}
	if size > cur {
		return &block.OpError{Op: "truncate", Off: size, Err: errCannotGrow}
	}
	return nil
}
