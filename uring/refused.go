//go:build linux

package uring

import (
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// refused reports whether a fallocate error means "this mode is not
// supported here" (QEMU's translate_err plus EINVAL, e.g. tmpfs ZERO_RANGE).
func refused(err error) bool {
	return err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS ||
		err == unix.ENOTTY || err == unix.ENODEV
}

// RefusedError is a zeroing with Allocate that the filesystem or device
// refused (U2, U15): it is block.ErrNotSupported, nothing was written,
// and it wraps the errno. Mode names the fallocate that was refused:
// ZERO_RANGE, or WRITE_ZEROES on a block device (which has no other).
type RefusedError struct {
	Mode string // "ZERO_RANGE" or "WRITE_ZEROES"
	Err  error  // the errno (refused)
}

func (e *RefusedError) Error() string {
	return "uring: fallocate(" + e.Mode + ") refused: " + block.ErrNotSupported.Error() + " (" + e.Err.Error() + ")"
}

// Unwrap makes errors.Is find both block.ErrNotSupported and the errno.
func (e *RefusedError) Unwrap() []error { return []error{block.ErrNotSupported, e.Err} }

// modeName names a zeroing fallocate mode of allocFallocate and the
// linked ZeroThenWritev, for RefusedError.
func modeName(mode uint32) string {
	if mode == unix.FALLOC_FL_WRITE_ZEROES {
		return "WRITE_ZEROES"
	}
	return "ZERO_RANGE"
}
