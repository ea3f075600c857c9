// Package vhd reads and writes VHD images (QEMU's "vpc" format: fixed
// and dynamic disks) as a block.Device over the image file, the way QEMU
// 7.2's block/vpc.c does, and creates them as it does (Create). The
// on-disk codecs are in vhd/format; this package does the I/O.
//
// A fixed disk is the file's first Size bytes (the footer follows them).
// A dynamic disk maps each block of BlockSize guest bytes through its
// BAT entry: an unallocated block reads as zeros, an allocated one from
// the file after its sector bitmap. A differencing disk is refused
// (format.ErrUnsupported).
//
// Invariants (cited as VD1..VD10; block's B1..B10 hold too):
//
//	VD1  Opened without Options.Writable, a Disk is read-only: Writev,
//	     WriteZeroes and Truncate fail with block.ErrReadOnly and change
//	     nothing; Flush has nothing to do.
//	VD2  Open reads the footer (at the start of the file, or at its
//	     end only for a fixed disk: as QEMU's vpc_open, a file with no
//	     footer copy at the start whose end footer is not a fixed
//	     disk's is "invalid VPC image"), the dynamic header and the BAT once;
//	     after that only a writable Disk's allocations change its state
//	     (an entry goes from Unallocated to a block, once, VD7), so reads
//	     need no lock (B1), and a read touches only the file's bytes the
//	     BAT maps for it.
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
//	VD6  Writable (Options.Writable), a fixed disk writes through to the
//	     file at the same offsets; a dynamic disk with blocks of 4 KiB or
//	     more writes into its blocks (others are refused at Open with
//	     format.ErrUnsupported; so is, with format.ErrCorrupt, one whose
//	     blocks overlap each other or its metadata, and a fixed disk
//	     whose footer lies inside its bytes). Writes past the virtual size fail with
//	     ErrOutOfRange; Truncate fails with block.ErrNotSupported (QEMU's
//	     vpc cannot resize). WriteZeroes leaves unallocated blocks as
//	     they are (they read as zeros) and zeroes allocated ranges in the
//	     file; Allocate is refused on a dynamic disk.
//	VD7  A new block is given the space at free, which starts past every
//	     block the table maps and past the file's end (but for a footer
//	     there, which the block's bitmap overwrites): its unwritten bytes
//	     read as zeros, whatever a crash left in the file. Its bitmap is
//	     written (every sector present, as QEMU writes it) and its entry
//	     made durable (VD8) before the entry is stored in memory, so a
//	     write into the block waits for both; a block that was already
//	     allocated has its bitmap rewritten the same way before the
//	     first write into it.
//	VD8  A block is mapped on disk before any guest byte is written into
//	     it, one allocation at a time: its bitmap and the end footer past
//	     it are written and flushed, then its BAT entry, flushed. So the
//	     table never maps a block the file does not reach, and the file
//	     ends with a footer once a block was allocated; a crash leaves
//	     a block mapped over zeros, or its space leaked holding only a
//	     bitmap and zeros, never guest data outside the table. (QEMU
//	     places its next block after the last one the table maps,
//	     whatever the file holds past it, and reads that block's
//	     unwritten sectors from the file: a leaked block holding data
//	     would show through it. QEMU's own order is the same: bitmap,
//	     footer, entry, each flushed, then the data.) Flush only flushes
//	     the file.
//	VD9  Close flushes a writable Disk (as QEMU closes an image).
//	VD10 Create lays a new image out as QEMU 7.2's vpc_co_create: the
//	     size and geometry of format.NewPlan, a dynamic disk's footer copy
//	     at 0, dynamic header at 512, an empty BAT at 1536 (2 MiB blocks)
//	     and the footer after it; a fixed disk's Size bytes then its
//	     footer. Only the timestamp and the UUID differ from QEMU's.
package vhd
