package vhd

import (
	"crypto/rand"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vhd/format"
)

// CreateOptions configure Create (QEMU's vpc create options).
type CreateOptions struct {
	// Size is the requested virtual size in bytes; the image gets
	// format.NewPlan's.
	Size int64
	// Fixed makes a fixed disk (subformat=fixed) instead of a dynamic
	// one.
	Fixed bool
	// ForceSize keeps Size as it is, with the largest geometry
	// (force_size=on): only readers that trust current_size see it.
	ForceSize bool
	// Now is the creation time in the footer (time.Now when zero).
	Now time.Time
}

// Create writes a new, empty VHD image into file, as QEMU 7.2's
// vpc_co_create lays it out (VD10), and returns the virtual size it got.
// The file should be empty: a dynamic disk's blocks are allocated past
// its end, a fixed disk's bytes are the file's first Size bytes as they
// are.
func Create(file block.Device, o CreateOptions) (int64, error) {
	p, err := format.NewPlan(o.Size, o.ForceSize)
	if err != nil {
		return 0, err
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	var id [16]byte
	rand.Read(id[:])
	id[6] = id[6]&0x0f | 0x40 // a version 4 UUID, as qemu_uuid_generate
	id[8] = id[8]&0x3f | 0x80
	foot := format.NewFooter(p, !o.Fixed, o.ForceSize, now, id).Encode()
	if o.Fixed {
		if err := file.Truncate(p.Size + format.FooterSize); err != nil {
			return 0, err
		}
		if err := file.Writev(p.Size, [][]byte{foot}); err != nil {
			return 0, err
		}
		return p.Size, file.Flush()
	}
	h := format.NewDynHeader(p.Size)
	table := make([]byte, format.TableBytes(int64(h.MaxTableEntries)))
	for i := range table {
		table[i] = 0xff
	}
	// QEMU's order: the footer copy, the end footer, the table, the
	// header.
	for _, w := range []struct {
		off int64
		b   []byte
	}{
		{0, foot},
		{format.NewTableOffset + int64(len(table)), foot},
		{format.NewTableOffset, table},
		{format.FooterSize, h.Encode()},
	} {
		if err := file.Writev(w.off, [][]byte{w.b}); err != nil {
			return 0, err
		}
	}
	return p.Size, file.Flush()
}
