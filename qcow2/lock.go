package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
)

// Image locks (block B8) are taken as QEMU takes them, so that QEMU and
// qring refuse to write an image the other is using. A qcow2 image's
// metadata cannot be shared with another writer: every user, read-only
// or not, leaves write and resize unshared, and a writer needs both.
// Force-share (qemu-img -U) is for read-only users that accept reading
// an image another process writes: they share everything.
//
// Devices that do not implement block.Locker (memdev) take no locks;
// DefaultOpener's OSFile and uring's files take them.

// Format names for LockPerms.
const (
	FormatQcow2 = "qcow2"
	FormatRaw   = "raw"
)

// ErrForceShareWritable is returned when force-share is asked for an image
// opened read-write (QEMU: "force-share=on can only be used with
// read-only images").
var ErrForceShareWritable = errors.New("force-share=on can only be used with read-only images")

// LockPerms are the permissions QEMU 7.2 takes for an image of format
// opened read-only or not, and with force-share (as measured in
// /proc/locks beside qemu-io and qemu-img): a qcow2 writer holds
// read|write|resize and shares read|write-unchanged; a qcow2 reader, or
// any backing file, holds read and does not share write or resize; a raw
// image (a leaf, not a backing file) shares everything.
func LockPerms(format string, readOnly, forceShare, backing bool) (perm, shared block.Perm) {
	perm = block.PermRead
	if !readOnly {
		perm |= block.PermWrite
		if format != FormatRaw {
			perm |= block.PermResize
		}
	}
	switch {
	case forceShare && readOnly:
		shared = block.PermAll
	case format == FormatRaw && !backing:
		shared = block.PermAll
	default:
		shared = block.PermAll &^ (block.PermWrite | block.PermResize)
	}
	return perm, shared
}

// LockError is an image lock conflict with the image's path, worded as
// QEMU words it; errors.Is(err, block.ErrLocked) holds.
type LockError struct {
	Path string
	Err  error // a *block.LockError
}

func (e *LockError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("%v\nIs another process using the image?", e.Err)
	}
	return fmt.Sprintf("%v\nIs another process using the image [%s]?", e.Err, e.Path)
}

func (e *LockError) Unwrap() error { return e.Err }

// lockDevice takes the image locks of a device opened for path as an
// image of format, unless the options opt out (NoLock) or the device
// cannot lock.
func lockDevice(dev block.Device, path, format string, o Options) error {
	if o.ForceShare && !o.ReadOnly {
		return ErrForceShareWritable
	}
	l, ok := dev.(block.Locker)
	if o.NoLock || !ok {
		return nil
	}
	perm, shared := LockPerms(format, o.ReadOnly, o.ForceShare, o.asBacking)
	return LockAs(l, path, perm, shared)
}

// LockAs takes the locks perm/shared on l, and words a conflict as QEMU
// does for path.
func LockAs(l block.Locker, path string, perm, shared block.Perm) error {
	if err := l.Lock(perm, shared); err != nil {
		if errors.Is(err, block.ErrLocked) {
			return &LockError{Path: path, Err: err}
		}
		return fmt.Errorf("qcow2: locking %s: %w", path, err)
	}
	return nil
}
