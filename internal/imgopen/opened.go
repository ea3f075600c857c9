package imgopen

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
)

// Opened is an open image or driver stack: what Open and OpenSpec return.
type Opened struct {
	// Dev is the top device: the guest's requests go to it.
	Dev block.Device
	// Image is Dev as a qcow2 image when the image (for a stack, its root
	// driver) is qcow2, else nil: metrics and the qcow2-only commands then
	// see a plain device.
	Image *qcow2.Image
	// File is the image's host file when it is a *uring.File, for the
	// backend's name and counters: set by Open (nil when Spec.WrapFile
	// stands in front of it), nil for a driver stack.
	File *uring.File

	// close closes the whole tree; nil means Dev.Close.
	close func() error
}

// Format names the format as the commands report it: "qcow2" when Image
// is set, else "raw".
func (o *Opened) Format() string {
	if o.Image != nil {
		return "qcow2"
	}
	return "raw"
}

// Close closes all that was opened: a qcow2 image closes the host file it
// opened; a stack first lets its mirrors with wait=on converge, then
// closes the tree (every layer closes its children).
func (o *Opened) Close() error {
	if o.close != nil {
		return o.close()
	}
	return o.Dev.Close()
}
