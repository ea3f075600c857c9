//go:build linux

package uring

import "github.com/qring/qring/block"

// Image locks (block B8): QEMU's file-posix lock bytes, taken with open
// file description locks through block.FDLocks (its doc says how). The
// locks go away with the descriptor, so Close releases them.

var _ block.Locker = (*File)(nil)

// Lock implements block.Locker (block.FDLocks.Lock): on a conflict the
// locks held before the call are restored.
func (f *File) Lock(perm, shared block.Perm) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	return f.locks.Lock(f.fd, perm, shared)
}
