// Package vhd reads VHD images (QEMU's "vpc" format: fixed and dynamic
// disks) as a read-only block.Device over the image file, the way QEMU
// 7.2's block/vpc.c reads them. The on-disk codecs are in vhd/format;
// this package does the I/O.
//
// A fixed disk is the file's first Size bytes (the footer follows them).
// A dynamic disk maps each block of BlockSize guest bytes through its
// BAT entry: an unallocated block reads as zeros, an allocated one from
// the file after its sector bitmap. A differencing disk is refused
// (format.ErrUnsupported).
//
// Invariants (cited as VD1..VD5; block's B1..B10 hold too):
//
//	VD1  Read-only: Writev, WriteZeroes and Truncate fail with
//	     block.ErrReadOnly and change nothing; Flush has nothing to do.
//	VD2  Open reads the footer, the dynamic header and the BAT once;
//	     after that the Disk's state never changes, so requests need no
//	     lock (B1), and a read touches only the file's bytes the BAT
//	     maps for it.
//	VD3  Every offset read from the file was checked at Open to lie
//	     within the file as QEMU measures it (its length rounded up to a
//	     sector): the BAT, and each allocated block with its bitmap
//	     (QEMU's free_data_block_offset check). The BAT kept in memory
//	     holds only the entries that cover the virtual size, and is
//	     bounded by the file's length before it is allocated (vhd/format's
//	     VF1).
//	VD4  Reads match QEMU's: a dynamic disk's allocated block is read
//	     whole, without its sector bitmap (VF5); bytes past the virtual
//	     size read as zeros (B2).
//	VD5  Block status matches QEMU's vpc_co_block_status: an
//	     unallocated block is zero and not data; an allocated block is
//	     data at its host offset, one block at a time (its bitmap
//	     separates it from the next); a fixed disk is the file's own
//	     data and holes at the same offsets (BDRV_BLOCK_RECURSE).
package vhd
