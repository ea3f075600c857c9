package imgopen

import (
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/vhd"
)

// openVPC opens a VHD image (QEMU's "vpc" format) over its host file,
// read-only or writable as the spec asks (vhd's VD1, VD6), with the
// locks qemu-img takes for it.
func openVPC(s Spec, op qcow2.Opener, fellBack string) (*Opened, error) {
	ro := s.ReadOnly || s.Opts.ReadOnly
	f, err := op(s.Path, ro)
	if err != nil {
		return nil, err
	}
	if err := lockFormatFile(f, s.Path, "vpc", ro, s.Opts); err != nil {
		f.Close()
		return nil, err
	}
	d, err := vhd.Open(f, vhd.Options{Name: s.Path, Writable: !ro, SizeCalc: s.SizeCalc})
	if err != nil {
		f.Close()
		return nil, err
	}
	file, _ := f.(*uring.File)
	return &Opened{Dev: d, VHD: d, File: file, fellBack: fellBack}, nil
}
