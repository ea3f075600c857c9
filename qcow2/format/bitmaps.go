package format

// Persistent dirty bitmaps (the bitmaps header extension). The engine
// maintains the ones it can (qcow2/bitmaps.go) and otherwise clears their
// autoclear bit, which tells QEMU they are stale. While the bit is set
// their clusters are in use, and Check counts them, as qemu-img does.
// The codecs here find those clusters and change an entry's table and
// flags in place.

// MaxBitmapDirectory bounds the bitmap directory (QEMU's
// QCOW2_MAX_BITMAP_DIRECTORY_SIZE, 64 KiB entries of up to 1 KiB).
const MaxBitmapDirectory = 1024 * 65535

// MaxBitmapTable bounds a bitmap table's entries (QEMU's
// BME_MAX_TABLE_SIZE).
const MaxBitmapTable = 0x8000000

// BitmapsExt is the bitmaps header extension.
type BitmapsExt struct {
	N         uint32 // nb_bitmaps
	DirSize   uint64 // bitmap_directory_size, bytes
	DirOffset HostOff
}

// ParseBitmapsExt decodes the bitmaps extension's data, exactly 24
// bytes (QEMU: "bitmaps_ext: Invalid extension length").
func ParseBitmapsExt(b []byte) (BitmapsExt, error) {
	if len(b) != 24 {
		return BitmapsExt{}, corrupt("bitmaps_extension", uint64(len(b)), "extension of %d bytes, want 24", len(b))
	}
	e := BitmapsExt{N: be.Uint32(b), DirSize: be.Uint64(b[8:]), DirOffset: HostOff(be.Uint64(b[16:]))}
	switch {
	case be.Uint32(b[4:]) != 0:
		return e, corrupt("bitmaps_extension", 4, "reserved field is not zero")
	case e.N == 0 || e.N > 65535:
		return e, corrupt("bitmaps_extension", uint64(e.N), "%d bitmaps", e.N)
	case e.DirSize == 0 || e.DirSize > MaxBitmapDirectory:
		return e, corrupt("bitmaps_extension", e.DirSize, "bitmap directory of %d bytes", e.DirSize)
	}
	return e, nil
}

// BitmapEntry is the part of a bitmap directory entry that names
// clusters (the bitmap table's offset and its number of entries), with
// what qemu-img info shows of a bitmap.
type BitmapEntry struct {
	TableOffset     HostOff
	TableSize       uint32
	Name            string
	Flags           uint32 // BitmapInUse, BitmapAuto, ...
	Type            uint8  // BitmapTypeDirty
	GranularityBits uint8
	ExtraDataSize   uint32
	// At is the entry's byte offset in the directory (PutBitmapEntry).
	At uint64
}

// Bitmap directory entry flags. BitmapFlagsKnown are the flags QEMU 7.2
// knows (all others are its BME_RESERVED_FLAGS): the specification's
// extra_data_compatible (bit 2) is not one of them, and QEMU refuses to
// open an image with a bitmap that sets it (check_dir_entry).
const (
	BitmapInUse         = 1 << 0
	BitmapAuto          = 1 << 1
	BitmapExtraDataComp = 1 << 2
	BitmapFlagsKnown    = BitmapInUse | BitmapAuto
)

// BitmapTypeDirty is the only bitmap type: dirty tracking.
const BitmapTypeDirty = 1

// Granularity bounds of a dirty-tracking bitmap (QEMU's
// BME_MIN_GRANULARITY_BITS, BME_MAX_GRANULARITY_BITS).
const (
	MinBitmapGranularityBits = 9
	MaxBitmapGranularityBits = 31
)

// BitmapTableSize is the number of table entries a bitmap of the given
// granularity needs for a disk of size bytes with clusters of cs bytes:
// one bit per granule, cs*8 bits per data cluster.
func BitmapTableSize(size uint64, granBits uint8, cs uint64) uint64 {
	g := uint64(1) << granBits
	nbits := (size + g - 1) / g
	return (nbits + cs*8 - 1) / (cs * 8)
}

// PutBitmapEntry writes e's table offset, table size and flags into the
// directory dir at e.At, leaving the rest of the entry as it is.
func PutBitmapEntry(dir []byte, e BitmapEntry) {
	be.PutUint64(dir[e.At:], uint64(e.TableOffset))
	be.PutUint32(dir[e.At+8:], e.TableSize)
	be.PutUint32(dir[e.At+12:], e.Flags)
}

// ParseBitmapDirectory decodes n entries from the directory b.
func ParseBitmapDirectory(b []byte, n uint32) ([]BitmapEntry, error) {
	var out []BitmapEntry
	off := uint64(0)
	for i := uint32(0); i < n; i++ {
		if off+24 > uint64(len(b)) {
			return nil, corrupt("bitmap_directory", off, "bitmap %d runs past the directory", i)
		}
		e := BitmapEntry{TableOffset: HostOff(be.Uint64(b[off:])), TableSize: be.Uint32(b[off+8:]),
			Flags: be.Uint32(b[off+12:]), Type: b[off+16], GranularityBits: b[off+17],
			ExtraDataSize: be.Uint32(b[off+20:]), At: off}
		nameLen := uint64(be.Uint16(b[off+18:]))
		extra := uint64(e.ExtraDataSize)
		end := off + 24 + extra + nameLen
		if extra > 1024 || nameLen == 0 || end > uint64(len(b)) {
			return nil, corrupt("bitmap_directory", off, "bitmap %d runs past the directory", i)
		}
		if e.TableSize > MaxBitmapTable {
			return nil, corrupt("bitmap_directory", off, "bitmap %d: table of %d entries", i, e.TableSize)
		}
		e.Name = string(b[off+24+extra : end])
		out = append(out, e)
		off = (end + 7) &^ 7
	}
	if off != uint64(len(b)) {
		// QEMU's bitmap_list_load reads entries up to the directory's
		// end and refuses what does not end there ("More bitmaps found
		// than specified in header extension", "Broken bitmap
		// directory"): a directory longer than its entries is broken.
		qemu := "Broken bitmap directory"
		if off+24 <= uint64(len(b)) {
			qemu = "More bitmaps found than specified in header extension"
		}
		return nil, corruptQ("bitmap_directory", off, qemu, "the directory's %d bytes hold more than its %d bitmaps", len(b), n)
	}
	return out, nil
}

// Bitmap table entries.
const (
	bmeOffsetMask   = 0x00fffffffffffe00
	bmeReservedMask = 0xff000000000001fe
)

// BitmapAllOnes is the table entry of a data cluster that reads as all
// ones without a cluster.
const BitmapAllOnes = 1

// BitmapDataCluster returns the data cluster a bitmap table entry names,
// 0 for none (all zeros, or all ones with bit 0 set).
func BitmapDataCluster(e uint64, g *Geometry) (HostOff, error) {
	off := HostOff(e & bmeOffsetMask)
	switch {
	case e&bmeReservedMask != 0:
		return 0, corrupt("bitmap_table_entry", e, "reserved bits set")
	case off != 0 && !g.Aligned(off):
		return 0, corrupt("bitmap_table_entry", e, "data cluster not aligned")
	case off != 0 && e&1 != 0:
		return 0, corrupt("bitmap_table_entry", e, "data cluster and all-ones flag")
	}
	return off, nil
}
