package imgopen

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/vmdk"
)

// ErrVMDKReadOnly is a VMDK image opened for writing that qring reads
// but does not write (vmdk's KD8: images with a parent, vmfs extents,
// metadata it cannot write safely); the error wrapping it says why.
var ErrVMDKReadOnly = errors.New("qring does not write this VMDK image: open it read-only")

// readOnlyVMDK is a writable open refused for an image that opens
// read-only.
type readOnlyVMDK struct{ err error }

func (e readOnlyVMDK) Error() string        { return e.err.Error() }
func (e readOnlyVMDK) Unwrap() []error      { return []error{e.err, ErrVMDKReadOnly} }
func (e readOnlyVMDK) Is(target error) bool { return target == ErrVMDKReadOnly }

// openVMDK opens a VMDK image over its host file, read-only or writable
// as the spec asks (vmdk's KD1, KD8), and, for a descriptor file, its
// extent files the same way.
func openVMDK(s Spec, op qcow2.Opener, fellBack string) (*Opened, error) {
	ro := s.ReadOnly || s.Opts.ReadOnly
	f, err := op(s.Path, ro)
	if err != nil {
		return nil, err
	}
	if err := lockFormatFile(f, s.Path, "vmdk", ro, s.Opts); err != nil {
		f.Close()
		return nil, err
	}
	d, err := openVMDKFile(f, s.Path, op, s.Opts, s.Opts.NoBacking, nil, !ro)
	if errors.Is(err, vmdk.ErrNotWritable) && !ro {
		// Refused writable: say so when it opens read-only.
		if r, rerr := openVMDKFile(f, s.Path, op, s.Opts, s.Opts.NoBacking, nil, false); rerr == nil {
			r.Close() // closes f
			return nil, readOnlyVMDK{err}
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	file, _ := f.(*uring.File)
	return &Opened{Dev: d, VMDK: d, File: file, fellBack: fellBack}, nil
}

// ErrVMDKParentLoop is a VMDK parent chain that comes back to an image
// in it. QEMU 7.2 opens such a chain until it runs out of file
// descriptors.
var ErrVMDKParentLoop = errors.New("the VMDK parent chain loops back to an image in it")

// openVMDKFile opens the VMDK image in f (named path), its extent files
// and, unless noParent, its parent chain, read-only (vmdk's KD6), each
// locked as QEMU locks them (lockFormatFile, with o's NoLock and
// ForceShare); above are the files of the images above it; writable
// opens the image itself and its extent files for writing (vmdk's KD8).
// On error f is left to the caller.
func openVMDKFile(f block.Device, path string, op qcow2.Opener, o qcow2.Options, noParent bool, above []os.FileInfo, writable bool) (*vmdk.Disk, error) {
	if fi, err := os.Stat(path); err == nil {
		above = append(slices.Clip(above), fi)
	}
	return vmdk.Open(f, vmdk.Options{Name: path, NoParent: noParent, Writable: writable,
		OpenExtent: func(p string, writable bool) (block.Device, error) {
			if err := checkFileType(p); err != nil {
				return nil, err
			}
			d, err := op(p, !writable)
			if err != nil {
				return nil, FileOpenError(p, err)
			}
			if err := lockFormatFile(d, p, "vmdk", !writable, o); err != nil {
				d.Close()
				return nil, err
			}
			return d, nil
		},
		OpenParent: func(p string) (*vmdk.Disk, error) {
			d, err := openVMDKParent(p, op, o, above)
			if err != nil {
				// As the block layer words it (bdrv_open_backing_file).
				return nil, &qcow2.BackingError{File: p, Err: err}
			}
			return d, nil
		}})
}

// openVMDKParent opens the parent at path as a VMDK image (QEMU's
// vmdk_parent_open names its format), with its own parent.
func openVMDKParent(path string, op qcow2.Opener, o qcow2.Options, above []os.FileInfo) (*vmdk.Disk, error) {
	if fi, err := os.Stat(path); err == nil {
		for _, a := range above {
			if os.SameFile(a, fi) {
				return nil, fmt.Errorf("%w: %q", ErrVMDKParentLoop, path)
			}
		}
	}
	if err := checkFileType(path); err != nil {
		return nil, err
	}
	f, err := op(path, true)
	if err != nil {
		return nil, err
	}
	if err := lockFormatFile(f, path, "vmdk", true, o); err != nil {
		f.Close()
		return nil, err
	}
	d, err := openVMDKFile(f, path, op, o, false, above, false)
	if err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

// FileOpenError is a failure to open a host file (an image's, an
// extent file's) in the words of QEMU's file driver (under
// bdrv_open_child): "Could not open 'x': No such file or directory".
func FileOpenError(path string, err error) error {
	var errno syscall.Errno
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("Could not open '%s': No such file or directory", path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("Could not open '%s': Permission denied", path)
	case errors.As(err, &errno):
		msg := errno.Error()
		return fmt.Errorf("Could not open '%s': %s", path, strings.ToUpper(msg[:1])+msg[1:])
	}
	return err
}

// lockFormatFile takes on a file of a VHD or VMDK image (its own file,
// an extent file, a parent's) the locks QEMU 7.2's format nodes take on
// theirs, as /proc/locks shows them beside qemu-io: read-only, read held,
// write and resize not shared; writable, write and resize held too; with force-share (-U, read-only only) all shared; none with
// NoLock, or on a device that cannot lock.
func lockFormatFile(d block.Device, path, format string, readOnly bool, o qcow2.Options) error {
	if o.ForceShare && !readOnly {
		return qcow2.ErrForceShareWritable
	}
	l, ok := d.(block.Locker)
	if o.NoLock || !ok {
		return nil
	}
	if format == "luks" {
		// QEMU's crypto driver takes its file's permissions as a raw
		// node does: no resize, nothing unshared.
		format = qcow2.FormatRaw
	}
	perm, shared := qcow2.LockPerms(format, readOnly, o.ForceShare, false)
	return qcow2.LockAs(l, path, perm, shared)
}
