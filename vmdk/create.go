package vmdk

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vmdk/format"
)

// CreateOptions configure Create: a new monolithicSparse image, as
// qemu-img create -f vmdk makes one by default.
type CreateOptions struct {
	format.NewOptions
	// Name is the extent file's base name, written into the descriptor's
	// extent line.
	Name string
	// CID is the descriptor's content ID; 0 picks a random one, as QEMU
	// does.
	CID uint32
}

// Create writes a new, empty monolithicSparse (or streamOptimized) VMDK image into file, laid
// out as QEMU 7.2's vmdk_co_do_create and vmdk_init_extent lay it out
// (KD7): the header, both grain directories with their tables after
// them, zeros up to the first grain, and the descriptor in sectors 1 to
// 20. The file should be empty. It returns the virtual size.
func Create(file block.Device, o CreateOptions) (int64, error) {
	p, err := format.NewPlan(o.NewOptions)
	if err != nil {
		return 0, err
	}
	cid := pickCID(o.CID)
	if o.Subformat != "" {
		return 0, format.Unsupported("vmdk: Create makes images of one hosted extent: a %s image is a descriptor file (CreateSparseExtent)", o.Subformat)
	}
	desc, err := format.NewDescriptor(o.NewOptions, cid, format.NewExtents(o.NewOptions, o.Name))
	if err != nil {
		return 0, err
	}
	if err := writeSparse(file, p, []byte(desc)); err != nil {
		return 0, err
	}
	return int64(p.Header.Capacity) * format.SectorSize, nil
}

// pickCID is cid, or a random one for 0, as QEMU picks one.
func pickCID(cid uint32) uint32 {
	for cid == 0 {
		var b [4]byte
		rand.Read(b[:])
		cid = binary.LittleEndian.Uint32(b[:])
	}
	return cid
}

// NewDescriptorFile is the descriptor file of a new monolithicFlat,
// twoGbMaxExtentFlat or twoGbMaxExtentSparse image (o.Subformat) whose
// file's base name is name, and the extents it names, their files
// relative to its own (format's KF8): the caller makes each extent's
// file (a flat one's sectors long, a sparse one with
// CreateSparseExtent), then writes the text into the descriptor file.
// cid 0 picks a random one.
func NewDescriptorFile(o format.NewOptions, name string, cid uint32) (string, []format.NewExtent, error) {
	if o.Subformat == "" || o.Stream {
		return "", nil, format.Unsupported("vmdk: a %s image is not a descriptor file (Create)", o.Subformat)
	}
	exts := format.NewExtents(o, name)
	text, err := format.NewDescriptor(o, pickCID(cid), exts)
	return text, exts, err
}

// CreateSparseExtent writes one new extent of a twoGbMaxExtentSparse
// image into file, laid out as QEMU 7.2 lays it out (format's KF8): a
// monolithicSparse extent of size bytes (o.Size) whose descriptor
// sectors stay empty. The file should be empty.
func CreateSparseExtent(file block.Device, o format.NewOptions) error {
	o.Subformat = ""
	p, err := format.NewPlan(o)
	if err != nil {
		return err
	}
	return writeSparse(file, p, nil)
}

// writeSparse lays a new sparse extent planned as p out in file, with
// desc (nil for none) in its descriptor sectors, and flushes it.
func writeSparse(file block.Device, p format.Plan, desc []byte) error {
	h := p.Header
	if err := file.Writev(0, [][]byte{h.Encode()}); err != nil {
		return err
	}
	if err := file.Truncate(int64(h.GrainOffset) * format.SectorSize); err != nil {
		return err
	}
	for _, gd := range []uint64{h.RGDOffset, h.GDOffset} {
		if err := file.Writev(int64(gd)*format.SectorSize, [][]byte{p.Directory(gd)}); err != nil {
			return err
		}
	}
	if len(desc) > 0 {
		db := make([]byte, (len(desc)+format.SectorSize-1)&^(format.SectorSize-1))
		copy(db, desc)
		if err := file.Writev(int64(h.DescOffset)*format.SectorSize, [][]byte{db}); err != nil {
			return err
		}
	}
	return file.Flush()
}
