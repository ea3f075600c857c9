package imgopen

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/vmdk"
)

// ErrVMDKReadOnly is a VMDK image opened for writing: qring reads VMDK
// images only (vmdk's KD1).
var ErrVMDKReadOnly = errors.New("Driver 'vmdk' is read-only in qring: open the image read-only")

// openVMDK opens a VMDK image read-only over its host file (vmdk's
// KD1), and, for a descriptor file, its extent files, also read-only: a
// request to open it for writing is refused before anything is opened.
func openVMDK(s Spec, op qcow2.Opener, fellBack string) (*Opened, error) {
	if !s.ReadOnly && !s.Opts.ReadOnly {
		return nil, ErrVMDKReadOnly
	}
	f, err := op(s.Path, true)
	if err != nil {
		return nil, err
	}
	d, err := vmdk.Open(f, vmdk.Options{Name: s.Path, OpenExtent: func(p string) (block.Device, error) {
		if err := checkFileType(p); err != nil {
			return nil, err
		}
		d, err := op(p, true)
		if err != nil {
			return nil, extentOpenError(p, err)
		}
		return d, nil
	}})
	if err != nil {
		f.Close()
		return nil, err
	}
	file, _ := f.(*uring.File)
	return &Opened{Dev: d, VMDK: d, File: file, fellBack: fellBack}, nil
}

// extentOpenError is a failure to open an extent file in QEMU's words
// (its file driver's, under bdrv_open_child).
func extentOpenError(path string, err error) error {
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
