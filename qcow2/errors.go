package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Typed errors; match with errors.Is.
var (
	// ErrCorrupt: the image violates the format (wraps format.ErrCorrupt).
	ErrCorrupt = format.ErrCorrupt
	// ErrUnsupported: a valid image uses a feature we do not implement.
	ErrUnsupported = format.ErrUnsupported
	// ErrReadOnly: a write to an image opened read-only (or marked
	// corrupt). It matches block.ErrReadOnly too (the device contract).
	ErrReadOnly error = readOnlyError{}
	// ErrWritesLost: the image refuses writes because a queue's
	// allocator gave up on writes its device still had in flight (Q16),
	// or a new L1 or refcount table's header update failed and the file
	// may name either table (Q4); reopen the image. It matches
	// ErrReadOnly too.
	ErrWritesLost error = writesLostError{}
	// ErrCheckBusy: a Check with repair found allocating writes still
	// running after waiting about a second for them.
	ErrCheckBusy = errors.New("qcow2: allocating writes kept running, check with repair refused")
	// ErrOutOfRange: a guest request past the virtual size.
	ErrOutOfRange = errors.New("qcow2: request past the end of the virtual disk")
)

type readOnlyError struct{}

func (readOnlyError) Error() string        { return "qcow2: image is read-only" }
func (readOnlyError) Is(target error) bool { return target == block.ErrReadOnly }

type writesLostError struct{}

func (writesLostError) Error() string {
	return "qcow2: writes refused: the device may still complete writes it gave up on"
}
func (writesLostError) Is(target error) bool {
	return target == ErrReadOnly || target == block.ErrReadOnly
}

// FieldError names the offending field; see format.FieldError.
type FieldError = format.FieldError

func corruptf(field string, v uint64, f string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(f, a...), Err: ErrCorrupt}
}

func unsupportedf(field string, v uint64, f string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(f, a...), Err: ErrUnsupported}
}
