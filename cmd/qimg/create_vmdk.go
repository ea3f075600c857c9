package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/vmdk"
	"github.com/qring/qring/vmdk/format"
)

// vmdkCreate are a VMDK image's create options (-f vmdk), as given.
type vmdkCreate struct {
	adapter, hwversion, toolsversion, subformat string
	compat6, zeroedGrain                        string // as given; "" when not
	o                                           format.NewOptions
}

var vmdkCreateOptions = []createOption{
	{"adapter_type", "str", "Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX"},
	{"backing_file", "str", "File name of a base image"},
	{"backing_fmt", "str", "Must be 'vmdk' if present"},
	{"compat6", "bool (on/off)", "VMDK version 6 image"},
	{"hwversion", "str", "VMDK hardware version"},
	{"size", "size", "Virtual disk size"},
	{"subformat", "str", "VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} "},
	{"toolsversion", "str", "VMware guest tools version"},
	{"zeroed_grain", "bool (on/off)", "Enable efficient zero writes using the zeroed-grain GTE feature"},
}

// vmdkSubformats are the subformats qemu-img knows (and qimg creates).
var vmdkSubformats = []string{"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "streamOptimized"}

// setVMDKOption sets one -o option of create -f vmdk, with QEMU's
// checks: the type at once, the values of adapter_type and subformat
// only once the driver creates the image (after "Formatting").
func (req *createRequest) setVMDKOption(k, v string) error {
	given := v
	v, err := checkOptionType(vmdkCreateOptions, k, v)
	if err != nil {
		return err
	}
	req.given[k] = true
	c := &req.vmdk
	late := func(err error) {
		if req.late == nil {
			req.late = err
		}
	}
	switch k {
	case "size":
		req.opts.Size = optionSize(v)
		req.sizeSet = req.opts.Size != -1
	case "adapter_type":
		c.adapter = v
		if !slices.Contains(format.Adapters, v) {
			late(fmt.Errorf("invalid parameter value: %s", v))
		}
	case "subformat":
		c.subformat = v
		if !slices.Contains(vmdkSubformats, v) {
			late(fmt.Errorf("invalid parameter value: %s", v))
		}
	case "hwversion":
		c.hwversion = v
	case "toolsversion":
		c.toolsversion = v
	case "compat6":
		c.compat6 = given
		c.o.Compat6 = v == "on"
	case "zeroed_grain":
		c.zeroedGrain = given
		c.o.ZeroedGrain = v == "on"
	case "backing_file":
		req.opts.BackingFile = v
	case "backing_fmt":
		req.opts.BackingFormat = v
	}
	return nil
}

// vmdkFormatting is the end of create -f vmdk's "Formatting" line, in
// QEMU's option order.
func vmdkFormatting(req *createRequest) string {
	c := req.vmdk
	s := fmt.Sprintf("size=%d", req.opts.Size)
	if req.opts.BackingFile != "" {
		s += " backing_file=" + req.opts.BackingFile
	}
	if req.opts.BackingFormat != "" {
		s += " backing_fmt=" + req.opts.BackingFormat
	}
	if req.given["adapter_type"] {
		s += " adapter_type=" + c.adapter
	}
	compat6 := c.compat6
	if compat6 == "" {
		compat6 = "off"
	}
	hw := c.hwversion
	if hw == "" {
		hw = "undefined"
	}
	s += " compat6=" + compat6 + " hwversion=" + hw
	if req.given["toolsversion"] {
		s += " toolsversion=" + c.toolsversion
	}
	if req.given["subformat"] {
		s += " subformat=" + c.subformat
	}
	if req.given["zeroed_grain"] {
		s += " zeroed_grain=" + c.zeroedGrain
	}
	return s
}

// createVMDK makes a VMDK image as qemu-img create -f vmdk does (vmdk's
// KD7, format's KF8), each file emptied only once qimg holds its write
// lock.
func createVMDK(path string, size int64, req *createRequest) error {
	c := req.vmdk
	if req.opts.BackingFormat != "" && req.opts.BackingFormat != "vmdk" {
		return errors.New("backing_file must be a vmdk image")
	}
	o := c.o
	o.Size, o.Adapter, o.ToolsVersion = size, c.adapter, c.toolsversion
	switch c.subformat {
	case "streamOptimized":
		o.Stream = true
	case format.MonolithicFlat, format.TwoGbMaxExtentFlat, format.TwoGbMaxExtentSparse:
		o.Subformat = c.subformat
	}
	if o.Flat() && req.opts.BackingFile != "" {
		return errors.New("Flat image can't have backing file")
	}
	if req.opts.BackingFile != "" {
		cid, err := vmdkParentCID(req)
		if err != nil {
			return err
		}
		o.ParentHint, o.ParentCID = req.opts.BackingFile, cid
	}
	if size < 0 {
		// qemu-img writes an image it cannot open (create_huge.go).
		return fmt.Errorf("vmdk: a size of %d bytes is negative", size)
	}
	if c.hwversion != "undefined" {
		o.HWVersion = c.hwversion
	}
	if o.Subformat != "" {
		return createVMDKFiles(path, o, req)
	}
	if _, err := format.NewDescriptor(o, 0, nil); err != nil {
		return err // before the file is made, as QEMU
	}
	return createEmpty(path, req.opts.Hints, func(f *uring.File) error {
		_, err := vmdk.Create(f, vmdk.CreateOptions{NewOptions: o, Name: filepath.Base(path)})
		return err
	})
}

// vmdkParentCID is the CID of the backing file a new VMDK snapshot
// names, which vmdk_co_do_create opens whatever -u says (the image made
// then reads through to it while the CIDs match: vmdk's KD6).
func vmdkParentCID(req *createRequest) (uint32, error) {
	img, err := openImage(imgopen.Spec{Path: pathCombine(req.file, req.opts.BackingFile), Format: "vmdk", ReadOnly: true,
		Opts: qcow2.Options{NoBacking: true}})
	if err != nil {
		var oe *OpenError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return 0, err
	}
	defer img.Close()
	if img.VMDK == nil {
		return 0, errors.New("backing_file must be a vmdk image")
	}
	return img.VMDK.CID(), nil
}

// createVMDKFiles makes a descriptor file and its extents' files beside
// it (format's KF8): a flat extent as a raw file of its size, a sparse
// one laid out as QEMU lays it out. When one fails (a flat extent too
// large for the file system, the descriptor's write), the files it made
// are removed: with no descriptor naming them they are of no use (QEMU
// leaves them, and a descriptor naming an extent it could not size).
func createVMDKFiles(path string, o format.NewOptions, req *createRequest) (err error) {
	text, exts, err := vmdk.NewDescriptorFile(o, filepath.Base(path), 0)
	if err != nil {
		return err // before any file is made, as QEMU
	}
	var made []string
	defer func() {
		if err != nil {
			for _, p := range made {
				os.Remove(p)
			}
		}
	}()
	for _, e := range exts {
		p := filepath.Join(filepath.Dir(path), e.File)
		if _, serr := os.Lstat(p); errors.Is(serr, fs.ErrNotExist) {
			made = append(made, p)
		}
		err := createEmpty(p, req.opts.Hints, func(f *uring.File) error {
			if e.Flat {
				return fillRaw(f, p, e.Sectors*vmdkSector, "off")
			}
			eo := o
			eo.Size = e.Sectors * vmdkSector
			return vmdk.CreateSparseExtent(f, eo)
		})
		if err != nil {
			return err
		}
	}
	if _, serr := os.Lstat(path); errors.Is(serr, fs.ErrNotExist) {
		made = append(made, path) // and the descriptor, if its write fails
	}
	return createEmpty(path, req.opts.Hints, func(f *uring.File) error {
		if err := f.Writev(0, [][]byte{[]byte(text)}); err != nil {
			return err
		}
		return f.Flush()
	})
}

// vmdkSector is a VMDK sector's bytes.
const vmdkSector = format.SectorSize
