package imgopen

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/vmdk"
)

// ErrCopyOnReadOnly is CopyOnRead's refusal on a read-only image, in
// QEMU's words (bdrv_open_common).
var ErrCopyOnReadOnly = errors.New("Can't use copy-on-read on read-only device")

// CopyOnRead puts QEMU's copy-on-read under the image's reads (qemu-io
// -C, BDRV_O_COPY_ON_READ): a read of a range the image does not
// allocate itself reads it through the backing chain and writes what it
// read into the image (filter.CopyOnRead with no source; zeros become a
// zeroing request, as QEMU's). It applies to a qcow2 image and a VMDK;
// raw and vpc images have no backing file and allocate everything as
// QEMU's block status sees them, so their reads stay reads, as QEMU's.
// readOnly says the image was opened read-only: refused then.
func (o *Opened) CopyOnRead(readOnly bool) error {
	if readOnly {
		return ErrCopyOnReadOnly
	}
	switch {
	case o.Image != nil:
		o.Dev = filter.NewCopyOnRead(corTop{o.Dev, AllocatedImage{o.Image}, int64(o.Image.Geometry().ClusterSize)}, nil)
	case o.VMDK != nil:
		o.Dev = filter.NewCopyOnRead(vmdkTop{corTop{o.Dev, allocatedVMDK{o.VMDK}, o.VMDK.ClusterSize()}}, nil)
	}
	return nil
}

// corTop is a top device whose allocation another object knows (the
// image under a stack's filters, or the image itself), with the image's
// cluster size (filter.ClusterSizer: copies are whole clusters).
type corTop struct {
	block.Device
	filter.Allocator
	cluster int64
}

func (t corTop) ClusterSize() int64 { return t.cluster }

// Discard forwards to the device, so a discard through the filter
// reaches the image (filter FL8).
func (t corTop) Discard(off, n int64) error {
	if d, ok := t.Device.(block.Discarder); ok {
		return d.Discard(off, n)
	}
	return block.ErrNotSupported
}

// vmdkTop is a VMDK under copy-on-read: zeros copied into it become
// zeroed grains where the image has them, and are written as zeros
// otherwise, allocating the grains, as QEMU's copy-on-read falls back to
// when vmdk cannot zero a grain; the disk's own WriteZeroes leaves an
// unallocated grain as it is (it reads as zeros already), and the read
// would copy nothing. A guest's zero write through the filter does the
// same, as QEMU's vmdk falls back to writing zeros for it too.
type vmdkTop struct{ corTop }

func (t vmdkTop) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := t.Device.WriteZeroes(off, n, flags); err != nil {
		return err
	}
	var zero []byte // one buffer for every unallocated run
	for end := off + n; off < end; {
		alloc, l, err := t.Allocated(off, end-off)
		if err != nil {
			return err
		}
		if l <= 0 {
			return fmt.Errorf("vmdk: status of [%d, %d): length %d", off, end, l)
		}
		l = min(l, end-off)
		for p := off; !alloc && p < off+l; {
			k := min(off+l-p, 1<<20)
			if zero == nil {
				zero = make([]byte, 1<<20)
			}
			if err := block.WriteAt(t.Device, zero[:k], p); err != nil {
				return err
			}
			p += k
		}
		off += l
	}
	return nil
}

// allocatedVMDK adapts a VMDK to filter.Allocator: allocated is what the
// disk itself holds (a grain, or a zeroed grain), its parent's not
// (vmdk.Disk.Status, QEMU's bdrv_is_allocated).
type allocatedVMDK struct{ d *vmdk.Disk }

func (a allocatedVMDK) Allocated(off, n int64) (bool, int64, error) {
	e, err := a.d.Status(off, n)
	if err != nil {
		return false, 0, err
	}
	return e.Present, min(e.Length, n), nil
}

// CacheModeWrapper is a device that only puts the one it wraps in a
// cache mode (writethrough): CORImage looks through it, not through
// filters (a raw window over a copy-on-read node is not that node).
type CacheModeWrapper interface {
	CacheModeWrapped() block.Device
}

// CORImage is the qcow2 image under a copy-on-read filter at the top of
// dev (-C's, or a spec's copy-on-read root), nil if there is none: QEMU
// sees through the filter for the image's allocation (qemu-io's map) and
// cluster size (its info).
func CORImage(dev block.Device) *qcow2.Image {
	for {
		u, ok := dev.(CacheModeWrapper)
		if !ok {
			break
		}
		dev = u.CacheModeWrapped() // qimg io's writethrough; not a filter (a raw window is not the image)
	}
	c, ok := dev.(*filter.CopyOnRead)
	if !ok {
		return nil
	}
	dev = c.Top()
	if t, ok := dev.(corTop); ok {
		dev = t.Device
	}
	im, _ := dev.(*qcow2.Image)
	return im
}
