//go:build linux

package uring

import (
	"time"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Image locks (block B8), as QEMU's file-posix driver takes them: an open
// file description lock (F_OFD_SETLK, shared) on byte block.LockPermBase+i
// for each permission i held, and on block.LockSharedBase+i for each
// permission not shared. A conflict is another description's lock on
// LockSharedBase+i for a permission wanted, or on LockPermBase+i for one
// not shared (F_OFD_GETLK ignores the caller's own locks). The locks go
// away with the descriptor, so Close releases them.

var _ block.Locker = (*File)(nil)

// lockPatience is how long Lock looks again at a conflict before it
// reports it. A lock outlives its owner's close while a child process
// forked by the same program still holds a copy of the descriptor,
// between fork and exec (os/exec closes it only at exec): a program
// that closes an image and opens it again while it starts a command would
// otherwise see its own lock.
var lockPatience = [...]time.Duration{time.Millisecond, 2 * time.Millisecond, 5 * time.Millisecond,
	10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond}

// Lock implements block.Locker. On a conflict the locks held before the
// call are restored.
func (f *File) Lock(perm, shared block.Perm) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	f.lockMu.Lock()
	defer f.lockMu.Unlock()
	if err := f.applyLocks(perm, shared); err != nil {
		f.applyLocks(f.lockPerm, f.lockShared)
		return err
	}
	err := checkLocks(f.fd, perm, shared)
	for _, d := range lockPatience {
		if _, conflict := err.(*block.LockError); !conflict {
			break
		}
		time.Sleep(d)
		err = checkLocks(f.fd, perm, shared)
	}
	if err != nil {
		f.applyLocks(f.lockPerm, f.lockShared)
		return err
	}
	f.lockPerm, f.lockShared = perm, shared
	return nil
}

// applyLocks takes or releases each of the lock bytes.
func (f *File) applyLocks(perm, shared block.Perm) error {
	for i := range block.PermCount {
		bit := block.Perm(1) << i
		if err := lockByte(f.fd, block.LockPermBase+int64(i), perm&bit != 0); err != nil {
			return &unixLockError{op: "lock", err: err}
		}
		if err := lockByte(f.fd, block.LockSharedBase+int64(i), shared&bit == 0); err != nil {
			return &unixLockError{op: "lock", err: err}
		}
	}
	return nil
}

// checkLocks finds another user's conflicting lock, in QEMU's order:
// permissions wanted first, then permissions not shared.
func checkLocks(fd int, perm, shared block.Perm) error {
	for i := range block.PermCount {
		bit := block.Perm(1) << i
		if perm&bit == 0 {
			continue
		}
		held, err := lockedByOther(fd, block.LockSharedBase+int64(i))
		if err != nil {
			return &unixLockError{op: "test lock", err: err}
		}
		if held {
			return &block.LockError{Perm: bit}
		}
	}
	for i := range block.PermCount {
		bit := block.Perm(1) << i
		if shared&bit != 0 {
			continue
		}
		held, err := lockedByOther(fd, block.LockPermBase+int64(i))
		if err != nil {
			return &unixLockError{op: "test lock", err: err}
		}
		if held {
			return &block.LockError{Perm: bit, Shared: true}
		}
	}
	return nil
}

func lockByte(fd int, off int64, on bool) error {
	lk := unix.Flock_t{Type: unix.F_UNLCK, Whence: 0, Start: off, Len: 1}
	if on {
		lk.Type = unix.F_RDLCK
	}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}

func lockedByOther(fd int, off int64) (bool, error) {
	for {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_GETLK, &lk)
		if err == unix.EINTR {
			continue
		}
		return err == nil && lk.Type != unix.F_UNLCK, err
	}
}

// unixLockError is a failure of the lock calls themselves (not a
// conflict), e.g. a file system without OFD locks.
type unixLockError struct {
	op  string
	err error
}

func (e *unixLockError) Error() string { return "image " + e.op + ": " + e.err.Error() }
func (e *unixLockError) Unwrap() error { return e.err }
