package imgopen

import (
	"fmt"
	"io"

	"github.com/qring/qring/block"
	"github.com/qring/qring/crypto/luksdisk"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vmdk"
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
	// VHD is Dev as a VHD image (QEMU's "vpc" format) when
	// the image is one, else nil.
	VHD *vhd.Disk
	// LUKS is Dev as a LUKS volume (QEMU's "luks" format) when its root
	// is one.
	LUKS *luksdisk.Disk
	// VMDK is Dev as a VMDK image when the image is one,
	// else nil.
	VMDK *vmdk.Disk
	// ProbedRaw is the host file of a raw root whose format was probed,
	// not named ("" for any other): QEMU's raw driver restricts writes
	// into such a file's first sector (GuardProbed).
	ProbedRaw string
	// Protocol is the protocol driver at the root of a spec with no
	// format node ("nbd"): QEMU reports it as the format.
	Protocol string
	// RawFile is the host file of a raw root whose child is that file
	// itself, or of a file node at the root ("" for any other root, and
	// for a raw node over another node: a qcow2 image, a throttle):
	// what resizing the image truncates, from RawOffset on. Over
	// another node a resize is the root's Truncate; truncating the
	// file under a qcow2 node would cut its clusters off.
	RawFile string
	// FileNode says the root is a file node (driver=file), no format
	// over it: QEMU calls its format "file" (Format).
	FileNode bool
	// RawOffset is where a raw root's window starts on its child (its
	// offset key; 0 for any other root).
	RawOffset int64
	// RawFixed says a raw root's window has a fixed size (its size
	// key): QEMU's raw driver refuses to resize it.
	RawFixed bool

	// close closes the whole tree; nil means Dev.Close.
	close func() error
	// throttles are the throttle nodes of a spec and of the json:
	// backing files under the image (ReleaseThrottles).
	throttles *throttleSet
	// fellBack says why the default AIO fell back to threads ("" if it
	// did not).
	fellBack string
}

// Backend names the host I/O backend of the image's own file (io_uring or
// threads; "" when unknown, as for a driver stack) and why it is in use:
// "requested", "io_uring", or why the default fell back to threads, e.g.
// "io_uring unavailable: io_uring_setup: operation not permitted".
func (o *Opened) Backend() (name, reason string) {
	if o.fellBack != "" {
		return "threads", o.fellBack
	}
	if o.File == nil {
		return "", ""
	}
	return o.File.Backend().String(), o.File.BackendReason()
}

// Format names the format as the commands report it: "qcow2" when Image
// is set, "vpc" when VHD is, "vmdk" when VMDK is, "luks" when LUKS is, else "raw".
func (o *Opened) Format() string {
	if o.Image != nil {
		return "qcow2"
	}
	if o.VHD != nil {
		return "vpc"
	}
	if o.VMDK != nil {
		return "vmdk"
	}
	if o.LUKS != nil {
		return "luks"
	}
	if o.FileNode {
		return "file"
	}
	if o.Protocol != "" {
		return o.Protocol
	}
	return "raw"
}

// GuardProbed puts a raw root whose format was probed (ProbedRaw) behind
// QEMU's raw restriction (NewProbeGuard), and prints ProbedWarning for
// it to w, as QEMU does when it opens such a node writable (w nil: no
// warning, for a node QEMU opened read-only first, such as a commit's
// base). The caller calls it for a writable image only.
func (o *Opened) GuardProbed(w io.Writer) {
	if o.ProbedRaw == "" {
		return
	}
	if w != nil {
		fmt.Fprintf(w, ProbedWarning, o.ProbedRaw)
	}
	o.Dev = NewProbeGuard(o.Dev)
}

// ReleaseThrottles lets the requests waiting in the throttle nodes of the
// spec and of the json: backing files under the image through at once,
// and every later one without waiting (filter.Throttle.Release): for a
// server whose forced shutdown must not wait out a throttled backlog.
// Safe to call at any time, and more than once.
func (o *Opened) ReleaseThrottles() {
	o.throttles.release()
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
