//go:build linux

package uring

import (
	"unsafe"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// File takes QEMU's file creation hints (block.FileHinter).
var _ block.FileHinter = (*File)(nil)

// fsxattr is the kernel's struct fsxattr (FS_IOC_FSGETXATTR).
type fsxattr struct {
	xflags     uint32
	extsize    uint32
	nextents   uint32
	projid     uint32
	cowextsize uint32
	pad        [8]byte
}

// The ioctls and flags hints use (linux/fs.h).
const (
	fsIocFSGetXattr = 0x801c581f // _IOR('X', 31, struct fsxattr)
	fsIocFSSetXattr = 0x401c5820 // _IOW('X', 32, struct fsxattr)
	fsXflagExtsize  = 0x00000800 // FS_XFLAG_EXTSIZE
	fsNocowFl       = 0x00800000 // FS_NOCOW_FL
)

// SetNoCOW sets FS_NOCOW_FL on the file, as QEMU's file driver does for
// nocow=on: errors are ignored (only btrfs has the flag).
func (f *File) SetNoCOW() {
	f.life.RLock()
	defer f.life.RUnlock()
	if f.closed.Load() {
		return
	}
	flags, err := unix.IoctlGetInt(f.fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		return
	}
	unix.IoctlSetPointerInt(f.fd, unix.FS_IOC_SETFLAGS, flags|fsNocowFl)
}

// SetExtentSizeHint sets the file's extent size hint to n bytes, as
// QEMU's file driver does when it creates a file: the file system's
// attributes are read, FS_XFLAG_EXTSIZE is added with n, and written
// back.
func (f *File) SetExtentSizeHint(n uint32) error {
	f.life.RLock()
	defer f.life.RUnlock()
	if f.closed.Load() {
		return block.ErrClosed
	}
	var a fsxattr
	if err := f.xattrIoctl(fsIocFSGetXattr, &a); err != nil {
		return err
	}
	a.xflags |= fsXflagExtsize
	a.extsize = n
	return f.xattrIoctl(fsIocFSSetXattr, &a)
}

func (f *File) xattrIoctl(req uintptr, a *fsxattr) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(f.fd), req, uintptr(unsafe.Pointer(a)))
	if e != 0 {
		return e
	}
	return nil
}
