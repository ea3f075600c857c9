package block

import (
	"sync"
	"syscall"
	"time"
)

// FDLocks are the image locks (B8) of one open file description, as
// QEMU's file-posix driver takes them: an open file description lock
// (F_OFD_SETLK, shared) on byte LockPermBase+i for each permission i
// held, and on LockSharedBase+i for each permission not shared. A
// conflict is another description's lock on LockSharedBase+i for a
// permission wanted, or on LockPermBase+i for one not shared
// (F_OFD_GETLK ignores the caller's own locks). The locks go away with
// the descriptor, so closing it releases them. The zero value holds no
// locks; an FDLocks is safe for concurrent use. OSFile and package
// uring's File take their locks through one.
type FDLocks struct {
	mu     sync.Mutex // orders Lock calls
	perm   Perm       // the permissions held
	shared Perm       // the permissions shared
}

// lockPatience is how long Lock looks again at a conflict before it
// reports it. A lock outlives its owner's close while a child process
// forked by the same program still holds a copy of the descriptor,
// between fork and exec (os/exec closes it only at exec): a program
// that closes an image and opens it again while it starts a command would
// otherwise see its own lock.
var lockPatience = [...]time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}

// Lock takes perm/shared on fd (Locker's contract): a *LockError on a
// conflict, after looking again for about 200 ms (lockPatience). On any
// failure the locks held before the call are restored. Where the system
// has no OFD locks (not Linux) it takes none and succeeds, as QEMU's
// locking=auto.
func (l *FDLocks) Lock(fd int, perm, shared Perm) error {
	if !ofdLocks {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := applyLocks(fd, perm, shared); err != nil {
		applyLocks(fd, l.perm, l.shared)
		return err
	}
	err := checkLocks(fd, perm, shared)
	for _, d := range lockPatience {
		if _, conflict := err.(*LockError); !conflict {
			break
		}
		time.Sleep(d)
		err = checkLocks(fd, perm, shared)
	}
	if err != nil {
		applyLocks(fd, l.perm, l.shared)
		return err
	}
	l.perm, l.shared = perm, shared
	return nil
}

// applyLocks takes or releases each of the lock bytes.
func applyLocks(fd int, perm, shared Perm) error {
	for i := range PermCount {
		bit := Perm(1) << i
		if err := lockByte(fd, LockPermBase+int64(i), perm&bit != 0); err != nil {
			return &fdLockError{op: "lock", err: err}
		}
		if err := lockByte(fd, LockSharedBase+int64(i), shared&bit == 0); err != nil {
			return &fdLockError{op: "lock", err: err}
		}
	}
	return nil
}

// checkLocks finds another user's conflicting lock, in QEMU's order:
// permissions wanted first, then permissions not shared.
func checkLocks(fd int, perm, shared Perm) error {
	for i := range PermCount {
		bit := Perm(1) << i
		if perm&bit == 0 {
			continue
		}
		held, err := LockedByOther(fd, LockSharedBase+int64(i))
		if err != nil {
			return &fdLockError{op: "test lock", err: err}
		}
		if held {
			return &LockError{Perm: bit}
		}
	}
	for i := range PermCount {
		bit := Perm(1) << i
		if shared&bit != 0 {
			continue
		}
		held, err := LockedByOther(fd, LockPermBase+int64(i))
		if err != nil {
			return &fdLockError{op: "test lock", err: err}
		}
		if held {
			return &LockError{Perm: bit, Shared: true}
		}
	}
	return nil
}

func lockByte(fd int, off int64, on bool) error {
	lk := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: 0, Start: off, Len: 1}
	if on {
		lk.Type = syscall.F_RDLCK
	}
	for {
		err := syscall.FcntlFlock(uintptr(fd), fOFDSetLk, &lk)
		if err != syscall.EINTR {
			return err
		}
	}
}

// LockedByOther reports whether another open file description than fd's
// holds a lock on byte off (F_OFD_GETLK: the caller's own locks do not
// count). It takes no lock.
func LockedByOther(fd int, off int64) (bool, error) {
	for {
		lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: off, Len: 1}
		err := syscall.FcntlFlock(uintptr(fd), fOFDGetLk, &lk)
		if err == syscall.EINTR {
			continue
		}
		return err == nil && lk.Type != syscall.F_UNLCK, err
	}
}

// fdLockError is a failure of the lock calls themselves (not a
// conflict), e.g. a file system without OFD locks.
type fdLockError struct {
	op  string
	err error
}

func (e *fdLockError) Error() string { return "image " + e.op + ": " + e.err.Error() }
func (e *fdLockError) Unwrap() error { return e.err }
