package main

import (
	"errors"
	"fmt"

	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vhd/format"
)

// setVPCOption sets one -o option of create -f vpc (vpcCreateOptions),
// with QEMU's checks: the type at once, subformat's value only once the
// driver creates the image (after "Formatting").
func (req *createRequest) setVPCOption(k, v string) error {
	given := v
	v, err := checkOptionType(vpcCreateOptions, k, v)
	if err != nil {
		return err
	}
	req.given[k] = true
	switch k {
	case "size":
		req.opts.Size = optionSize(v)
		req.sizeSet = req.opts.Size != -1
	case "subformat":
		req.vpc.subformat = v
		if v != "dynamic" && v != "fixed" && req.late == nil {
			req.late = &enumError{param: "subformat", value: v}
		}
	case "force_size":
		req.vpc.forceSize, req.vpc.forced = given, v == "on"
	}
	return nil
}

// createVPC makes a VHD image as qemu-img create -f vpc does (vhd's
// VD10), in a file emptied only once qimg holds its write lock.
func createVPC(path string, size int64, o vpcCreate, hints qcow2.FileHints) error {
	fixed := o.subformat == "fixed"
	return createEmpty(path, hints, func(f *uring.File) error {
		if size < 0 { // create_huge.go
			return fmt.Errorf("The image size is too large for file format 'vpc'")
		}
		size, err := vhd.Create(f, vhd.CreateOptions{Size: size, Fixed: fixed, ForceSize: o.forced})
		if errors.Is(err, format.ErrTooLarge) {
			// qemu-img's words for the driver's EFBIG.
			err = fmt.Errorf("The image size is too large for file format 'vpc'")
		}
		if err == nil && fixed && size > 0 {
			// The file driver grew an empty file: its first block is
			// written, as QEMU's is (allocateFirstBlock).
			err = allocateFirstBlock(f, size)
		}
		return err
	})
}
