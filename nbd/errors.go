package nbd

import (
	"errors"
	"syscall"

	"github.com/qring/qring/block"
)

// errno maps a device error to an NBD error value (section "Error
// values"): the spec lets a server send only EPERM, EIO, ENOMEM, EINVAL,
// ENOSPC, EOVERFLOW, ENOTSUP and ESHUTDOWN, so everything else is EIO.
// ENOTSUP is only for WRITE_ZEROES with FAST_ZERO (the spec says a server
// SHOULD NOT return it otherwise): writeZeroes makes that one itself, so
// here a device's "not supported" is an EIO.
func errno(err error) uint32 {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, block.ErrReadOnly), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		return errPerm
	case errors.Is(err, block.ErrRange), errors.Is(err, syscall.EINVAL):
		return errInval
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return errNoSpc
	case errors.Is(err, syscall.ENOMEM):
		return errNoMem
	case errors.Is(err, block.ErrClosed):
		return errShutdown
	}
	return errIO
}

// reqError is a request the server refuses before touching the device.
type reqError struct {
	code uint32
	msg  string
}

func (e *reqError) Error() string { return e.msg }

func einval(msg string) error { return &reqError{errInval, msg} }

// codeOf is errno for any error, reqError included.
func codeOf(err error) uint32 {
	var re *reqError
	if errors.As(err, &re) {
		return re.code
	}
	return errno(err)
}
