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

// Create writes a new, empty monolithicSparse VMDK image into file, laid
// out as QEMU 7.2's vmdk_co_do_create and vmdk_init_extent lay it out
// (KD7): the header, both grain directories with their tables after
// them, zeros up to the first grain, and the descriptor in sectors 1 to
// 20. The file should be empty. It returns the virtual size.
func Create(file block.Device, o CreateOptions) (int64, error) {
	p, err := format.NewPlan(o.NewOptions)
	if err != nil {
		return 0, err
	}
	cid := o.CID
	if cid == 0 {
		var b [4]byte
		rand.Read(b[:])
		cid = binary.LittleEndian.Uint32(b[:])
	}
	desc, err := format.NewDescriptor(o.NewOptions, cid, o.Name)
	if err != nil {
		return 0, err
	}
	h := p.Header
	if err := file.Writev(0, [][]byte{h.Encode()}); err != nil {
		return 0, err
	}
	if err := file.Truncate(int64(h.GrainOffset) * format.SectorSize); err != nil {
		return 0, err
	}
	for _, gd := range []uint64{h.RGDOffset, h.GDOffset} {
		if err := file.Writev(int64(gd)*format.SectorSize, [][]byte{p.Directory(gd)}); err != nil {
			return 0, err
		}
	}
	db := make([]byte, (len(desc)+format.SectorSize-1)&^(format.SectorSize-1))
	copy(db, desc)
	if err := file.Writev(int64(h.DescOffset)*format.SectorSize, [][]byte{db}); err != nil {
		return 0, err
	}
	return int64(h.Capacity) * format.SectorSize, file.Flush()
}
