package block

import (
	"errors"
	"fmt"
	"strings"
)

// Perm is a set of QEMU block permissions (BLK_PERM_*): what an image's
// user does with it, and what it lets others do. QEMU's file driver turns
// them into byte-range locks on the image file, and so does every device
// here that implements Locker, so that QEMU and qring see each other.
type Perm uint8

const (
	// PermRead: reads return consistent data (BLK_PERM_CONSISTENT_READ).
	PermRead Perm = 1 << iota
	// PermWrite: the data may change (BLK_PERM_WRITE).
	PermWrite
	// PermWriteUnchanged: writes that leave the data as it is
	// (BLK_PERM_WRITE_UNCHANGED).
	PermWriteUnchanged
	// PermResize: the size may change (BLK_PERM_RESIZE).
	PermResize

	// PermAll is every permission QEMU 7.2 locks.
	PermAll = PermRead | PermWrite | PermWriteUnchanged | PermResize
)

// PermCount is the number of permission bits; bit i is locked at byte
// LockPermBase+i (held) and LockSharedBase+i (not shared).
const PermCount = 4

// The lock byte offsets of QEMU's file-posix driver (RAW_LOCK_PERM_BASE
// and RAW_LOCK_SHARED_BASE).
const (
	LockPermBase   = 100
	LockSharedBase = 200
)

var permNames = [PermCount]string{"consistent read", "write", "write unchanged", "resize"}

// Name is QEMU's name of a single permission ("write", "resize", ...).
func (p Perm) Name() string {
	for i, n := range permNames {
		if p == 1<<i {
			return n
		}
	}
	return fmt.Sprintf("perm 0x%x", uint8(p))
}

func (p Perm) String() string {
	var parts []string
	for i := range PermCount {
		if p&(1<<i) != 0 {
			parts = append(parts, permNames[i])
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// Locker is implemented by devices that can take QEMU-compatible image
// locks (B8). Lock takes the locks for using the image with perm while
// sharing only shared with others, and fails with a *LockError (matching
// ErrLocked) when another user holds a permission this one does not
// share, or does not share one this one needs. A device releases its
// locks when it is closed; Lock may be called again to change them.
type Locker interface {
	Lock(perm, shared Perm) error
}

// ErrLocked is matched by every *LockError.
var ErrLocked = errors.New("image is locked")

// LockError says which permission could not be had, in QEMU's words.
type LockError struct {
	Perm Perm // the single permission in conflict
	// Shared is true when this user wanted to not share Perm but another
	// holds it (QEMU: `Failed to get shared "write" lock`), false when
	// this user needs Perm and another does not share it.
	Shared bool
}

func (e *LockError) Error() string {
	if e.Shared {
		return fmt.Sprintf("Failed to get shared %q lock", e.Perm.Name())
	}
	return fmt.Sprintf("Failed to get %q lock", e.Perm.Name())
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockError) Is(target error) bool { return target == ErrLocked }
