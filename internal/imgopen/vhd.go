package imgopen

import (
	"errors"

	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/vhd"
)

// ErrVPCReadOnly is a VHD image opened for writing: qring reads VHD
// images only (vhd's VD1).
var ErrVPCReadOnly = errors.New("Driver 'vpc' is read-only in qring: open the image read-only")

// openVPC opens a VHD image (QEMU's "vpc" format) read-only over its
// host file (vhd's VD1): the file is opened read-only, and a request to
// open it for writing is refused before anything is opened.
func openVPC(s Spec, op qcow2.Opener, fellBack string) (*Opened, error) {
	if !s.ReadOnly && !s.Opts.ReadOnly {
		return nil, ErrVPCReadOnly
	}
	f, err := op(s.Path, true)
	if err != nil {
		return nil, err
	}
	if err := lockFormatFile(f, s.Path, "vpc", s.Opts); err != nil {
		f.Close()
		return nil, err
	}
	d, err := vhd.Open(f, vhd.Options{Name: s.Path})
	if err != nil {
		f.Close()
		return nil, err
	}
	file, _ := f.(*uring.File)
	return &Opened{Dev: d, VHD: d, File: file, fellBack: fellBack}, nil
}
