// Package format holds the pure codecs of the VHD image format (QEMU's
// "vpc" driver, block/vpc.c; Microsoft's "Virtual Hard Disk Image Format
// Specification", October 2006): the 512-byte footer, the dynamic disk
// header, block allocation table (BAT) entries and per-block sector
// bitmaps, and the virtual size QEMU 7.2 gives an image; and, for new
// images (create.go), the size, geometry, footer and dynamic header QEMU
// 7.2's vpc_co_create writes. It does no I/O: the device in package vhd
// reads and writes the bytes and hands them here.
//
// All fields are big-endian, decoded at explicit offsets.
//
// Invariants (cited as VF1..VF5):
//
//	VF1  No parser panics, whatever its input, and none allocates: the
//	     caller sizes every buffer, and the sizes it needs (the BAT's)
//	     come from CheckDynamic, which bounds them by the file's length
//	     before anything is allocated.
//	VF2  Every rejection is an *Error whose text is QEMU 7.2's message
//	     for the same image (vpc_open), wrapping ErrCorrupt (the image
//	     is damaged), ErrTooLarge (QEMU's EFBIG) or ErrUnsupported (a
//	     valid image qring does not read: a differencing disk).
//	VF3  The footer checksum is the ones' complement of the byte sum of
//	     the 512-byte footer with its checksum field taken as zero; a
//	     footer whose checksum does not match is refused, as QEMU 7.2
//	     refuses it. The dynamic header's checksum is not checked: QEMU
//	     does not check it either.
//	VF4  The virtual size is QEMU 7.2's: cylinders x heads x sectors per
//	     track, unless the creator application is one QEMU trusts for
//	     current_size ("win ", "qem2", "d2v ", "CTXS", "tap\0"), the
//	     geometry is the maximum (65535 x 16 x 255), or the caller forces
//	     current_size (QEMU's force_size_calc option); never more than
//	     MaxSectors sectors.
//	VF5  A BAT entry is a sector number (entry x 512 is the byte offset of
//	     the block's bitmap; the data follows BitmapSize bytes later), or
//	     Unallocated. Sector bitmaps are decoded here, but a reader that
//	     matches QEMU does not consult them: QEMU reads an allocated block
//	     whole, whatever its bitmap says (block/vpc.c, get_image_offset).
package format
