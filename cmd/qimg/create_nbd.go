package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/qcow2"
)

// Creating an image on an NBD export, as qemu-img does: QEMU's nbd
// driver cannot create, so bdrv_co_create_opts_simple opens the export
// instead; it must be large enough for a raw image ("Cannot grow NBD
// nodes"), its first sector is zeroed, and the format writes its image
// at its start (a qcow2 image's metadata; what lies past it stays, and
// nothing references it).

// createOnNBD creates req's image on the export req.file names.
func createOnNBD(req *createRequest) error {
	switch {
	case req.format != "raw" && req.format != "qcow2":
		return fmt.Errorf("qring creates raw and qcow2 images on an NBD export, not %s", req.format)
	case req.opts.Preallocation != "" && req.opts.Preallocation != qcow2.PreallocOff:
		return errors.New("qring does not preallocate images on an NBD export")
	case req.opts.DataFile != "":
		return errors.New("qring does not create a data file beside an image on an NBD export")
	}
	a, err := imgopen.ParseNBDName(req.file)
	if err == nil {
		var c *nbd.Client
		if c, err = nbd.Dial(context.Background(), a, nbd.ClientOptions{}); err == nil {
			if c.Flags()&nbd.FlagReadOnly != 0 {
				c.Close()
				err = errors.New("Could not open image: Permission denied")
			} else {
				return createOnClient(req, c)
			}
		}
	}
	return fmt.Errorf("Protocol driver 'nbd' does not support image creation, and opening the image failed: %v", err)
}

func createOnClient(req *createRequest, c *nbd.Client) error {
	size, err := c.Size()
	if err == nil && req.format == "raw" && req.opts.Size > size {
		err = errCannotGrow
	}
	if err == nil && size > 0 {
		// create_file_fallback_zero_first_sector: no stale header
		// survives to be probed.
		err = c.WriteZeroes(0, min(size, 512), block.MayUnmap)
	}
	if err == nil && req.format == "qcow2" {
		err = qcow2.CreateDevice(exportFile{c}, req.opts)
	}
	if err == nil {
		err = c.Flush()
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// errCannotGrow is QEMU's inexact truncate's refusal to grow an export.
var errCannotGrow = errors.New("Cannot grow NBD nodes")

// exportFile is an export as the file a format creates its image in:
// Truncate is QEMU's inexact one (a smaller size is taken as it is, the
// export keeping its size; a larger one is refused).
type exportFile struct{ *nbd.Client }

func (f exportFile) Truncate(size int64) error {
	cur, err := f.Size()
	if err == nil && size > cur {
		return errCannotGrow
	}
	return err
}
