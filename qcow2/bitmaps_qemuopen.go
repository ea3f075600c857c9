package qcow2

import (
	"encoding/binary"
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// qemuBitmapsRefusal is the error with which QEMU 7.2's open fails on
// the image's persistent bitmaps (qcow2_load_dirty_bitmaps: every open
// of an image whose bitmaps' autoclear bit is set), in its words, or nil
// where QEMU opens it: a directory entry with extra data ("Bitmap extra
// data is not supported") or that check_dir_entry refuses (a flag QEMU
// does not know, the specification's extra_data_compatible bit 2 too, a
// type, granularity or table out of its bounds: "Bitmap 'NAME' doesn't
// satisfy the constraints"), then, for each bitmap not IN_USE, a table
// entry with reserved bits set or an unaligned offset
// (check_table_entry: "Could not read bitmap_table table from image for
// bitmap 'NAME': Invalid argument"). A directory that does not parse
// is left to the open's own checks.
//
// An open for a repair (check -r) fails with it, as QEMU's does: qimg's
// plain check reports such a bitmap as a corruption, but a repair would
// write an image QEMU refuses to open, let alone to write.
func (im *Image) qemuBitmapsRefusal() error {
	if im.hdr.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		return nil
	}
	data := im.bitmapsExt()
	if data == nil {
		return nil
	}
	ext, err := format.ParseBitmapsExt(data)
	if err != nil || ext.DirSize == 0 || ext.DirSize > 64<<20 {
		return nil
	}
	dir := make([]byte, ext.DirSize)
	if err := im.readAtLocked(dir, ext.DirOffset); err != nil {
		return nil
	}
	bms, err := format.ParseBitmapDirectory(dir, ext.N)
	if err != nil {
		return nil
	}
	cs := im.g.ClusterSize
	refuse := func(e format.BitmapEntry, qemu string) error {
		return &FieldError{Field: "bitmaps", Value: e.At, Err: ErrUnsupported,
			Msg: fmt.Sprintf("bitmap %q: QEMU refuses to open the image", e.Name), Qemu: qemu}
	}
	for _, e := range bms {
		if e.ExtraDataSize != 0 {
			return refuse(e, "Bitmap extra data is not supported")
		}
		phys := uint64(e.TableSize) * cs
		if e.TableSize == 0 || e.TableOffset == 0 || !im.g.Aligned(e.TableOffset) ||
			uint64(e.TableSize) > maxBitmapTable ||
			e.GranularityBits > format.MaxBitmapGranularityBits || e.GranularityBits < format.MinBitmapGranularityBits ||
			e.Flags&^format.BitmapFlagsKnown != 0 || len(e.Name) > 1023 || e.Type != format.BitmapTypeDirty ||
			phys > maxBitmapPhys ||
			(e.Flags&format.BitmapInUse == 0 && im.hdr.Size > (phys*8)<<e.GranularityBits) {
			return refuse(e, fmt.Sprintf("Bitmap '%s' doesn't satisfy the constraints", e.Name))
		}
	}
	for _, e := range bms {
		if e.Flags&format.BitmapInUse != 0 {
			continue
		}
		tb := make([]byte, uint64(e.TableSize)*format.TableEntrySize)
		if err := im.readAtLocked(tb, e.TableOffset); err != nil {
			return nil // the open's own checks
		}
		for i := uint64(0); i < uint64(e.TableSize); i++ {
			if _, err := format.BitmapDataCluster(binary.BigEndian.Uint64(tb[i*8:]), &im.g); err != nil {
				return refuse(e, fmt.Sprintf("Could not read bitmap_table table from image for bitmap '%s': Invalid argument", e.Name))
			}
		}
	}
	return nil
}
