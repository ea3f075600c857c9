package qcow2

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Typed errors; match with errors.Is.
var (
	// ErrCorrupt: the image violates the format (wraps format.ErrCorrupt).
	ErrCorrupt = format.ErrCorrupt
	// ErrUnsupported: a valid image uses a feature we do not implement.
	ErrUnsupported = format.ErrUnsupported
	// ErrNotQcow2: the file is no qcow2 image (wrong magic: a raw image,
	// another format); not ErrCorrupt.
	ErrNotQcow2 = format.ErrNotQcow2
	// ErrReadOnly: a write to an image opened read-only (or marked
	// corrupt). It matches block.ErrReadOnly too (the device contract).
	ErrReadOnly error = readOnlyError{}
	// ErrWritesLost: the image refuses writes because a queue's
	// allocator gave up on writes its device still had in flight (Q16),
	// or a new L1 or refcount table's header update failed and the file
	// may name either table (Q4); reopen the image. It matches
	// ErrReadOnly too.
	ErrWritesLost error = writesLostError{}
	// ErrMarkedCorrupt: a writable open of an image marked corrupt,
	// refused (Options.RefuseCorrupt) in QEMU's words. It matches
	// ErrCorrupt too.
	ErrMarkedCorrupt error = markedCorruptError{}
	// ErrCheckBusy: a Check with repair found allocating writes still
	// running after waiting about a second for them.
	ErrCheckBusy = errors.New("qcow2: allocating writes kept running, check with repair refused")
	// ErrOutOfRange: a guest request past the virtual size. It matches
	// block.ErrRange too (the device contract's range error).
	ErrOutOfRange error = outOfRangeError{}
	// ErrGrowNeedsZeroClusters: a version 2 image cannot grow past its
	// last cluster over a longer backing file (QEMU's "Failed to zero
	// out new clusters"): the new range must read zeros, and only zero
	// clusters would hide the backing data there. It matches
	// ErrUnsupported.
	ErrGrowNeedsZeroClusters = fmt.Errorf("%w: zeroing the grown range over the backing file needs zero clusters (version 3)", ErrUnsupported)
	// ErrBackingLoop: a backing chain names a file already in it (an
	// image backed by itself, or A backed by B backed by A).
	ErrBackingLoop = errors.New("qcow2: backing file creates an infinite loop")
)

// errNeedsRepair: a write to a dirty image with lazy refcounts opened
// for repair before a Check repaired it (repairDirty); it matches
// ErrReadOnly.
var errNeedsRepair = fmt.Errorf("%w: the image is dirty: its refcounts are repaired by Check first", ErrReadOnly)

// errBitmapsKept: a guest write to an image with persistent bitmaps
// opened for repair, which keeps them; it matches ErrReadOnly.
var errBitmapsKept = fmt.Errorf("%w: opened for repair, the image keeps its persistent bitmaps: reopen it to write (which marks them stale)", ErrReadOnly)

// ErrRefcountOverflow: a refcount would exceed what the image's refcount
// width holds (QEMU's -ERANGE); it matches ErrUnsupported.
var ErrRefcountOverflow = fmt.Errorf("%w: refcount overflow", ErrUnsupported)

// StepError is the failure of a step that QEMU names when it fails
// (its error_setg_errno words, as "Failed to grow the L1 table"): Err
// is the cause, a device error (block.OpError) with the errno. Tools
// that speak as qemu-img print Step and the errno in strerror's words.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return "qcow2: " + e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

type outOfRangeError struct{}

func (outOfRangeError) Error() string        { return "qcow2: request past the end of the virtual disk" }
func (outOfRangeError) Is(target error) bool { return target == block.ErrRange }

type readOnlyError struct{}

func (readOnlyError) Error() string        { return "qcow2: image is read-only" }
func (readOnlyError) Is(target error) bool { return target == block.ErrReadOnly }

type markedCorruptError struct{}

func (markedCorruptError) Error() string {
	return "qcow2: Image is corrupt; cannot be opened read/write"
}
func (markedCorruptError) Is(target error) bool { return target == ErrCorrupt }

// lostError is ErrWritesLost with its cause (loseWritesLocked).
type lostError struct{ cause error }

func (e *lostError) Error() string {
	if e.cause == nil {
		return ErrWritesLost.Error()
	}
	return ErrWritesLost.Error() + " (after: " + e.cause.Error() + ")"
}
func (e *lostError) Is(target error) bool { return errors.Is(ErrWritesLost, target) }
func (e *lostError) Unwrap() error        { return e.cause }

type writesLostError struct{}

func (writesLostError) Error() string {
	return "qcow2: writes refused until the image is reopened: the media may or may not hold writes that failed or were given up on"
}
func (writesLostError) Is(target error) bool {
	return target == ErrReadOnly || target == block.ErrReadOnly
}

// CheckFailedError is a Check that stopped before its end, as QEMU's
// stops with an errno (qemu-img: "Check failed: " and its text): Err
// says what stopped it. No result comes with it.
type CheckFailedError struct {
	Errno syscall.Errno
	Err   error
}

func (e *CheckFailedError) Error() string { return "qcow2: check failed: " + e.Err.Error() }
func (e *CheckFailedError) Unwrap() error { return e.Err }

// FieldError names the offending field; see format.FieldError.
type FieldError = format.FieldError

func corruptf(field string, v uint64, f string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(f, a...), Err: ErrCorrupt}
}

func unsupportedf(field string, v uint64, f string, a ...any) error {
	return &FieldError{Field: field, Value: v, Msg: fmt.Sprintf(f, a...), Err: ErrUnsupported}
}

// mayHaveLanded reports whether a metadata write of one block (an L1 or
// refcount table chunk of at most metaAlign bytes, which cannot land in
// part) that failed with err may still have reached the media: anything
// but running out of space or quota, which is reported before such a
// write. Not for longer writes: a short write retried then refused for
// space has landed in part. A pointer table's write that may have
// landed leaves the media ambiguous (Q4).
func mayHaveLanded(err error) bool {
	return !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT)
}
