package uring

import (
	"errors"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// fileSize is the size of the file, or of the block device (U15).
func (f *File) fileSize() (int64, error) {
	if f.blockDev {
		return f.devSize, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, err
	}
	return st.Size, nil
}

// checkDevice refuses a write or zeroing reaching past a block device's
// end with ENOSPC (U15), before the kernel sees it: fallocate would say
// EINVAL, which means "mode not supported" for every other file and
// would turn zeroing off for good (U2).
func (f *File) checkDevice(op string, off, n int64) error {
	if f.blockDev && off+n > f.devSize {
		return &block.OpError{Op: op, Off: off, Len: n, Err: unix.ENOSPC}
	}
	return nil
}

var errCannotGrow = errors.New("cannot grow a block device")

// truncateDevice is Truncate on a block device, as QEMU's host_device:
// a size up to the device's is accepted and changes nothing (the bytes
// past it stay as they are), a larger one is refused (U15).
func (f *File) truncateDevice(size int64) error {
	if size > f.devSize {
		return &block.OpError{Op: "truncate", Off: size, Err: errCannotGrow}
	}
	return nil
}
