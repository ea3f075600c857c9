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
