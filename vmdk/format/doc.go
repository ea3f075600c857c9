// Package format holds the pure codecs of the VMDK image format (QEMU's
// "vmdk" driver, block/vmdk.c; VMware's "Virtual Disk Format 5.0"): the
// hosted sparse extent header ("KDMV"), the text descriptor (embedded in
// a sparse extent or a file of its own) and its extent lines, grain
// directory and grain table entries, the stream-optimized grain markers
// and their compressed grains. It does no I/O: the device in package
// vmdk reads the bytes and hands them here.
//
// All binary fields are little-endian, decoded at explicit offsets.
//
// Invariants (cited as KF1..KF8):
//
//	KF1  No parser panics, whatever its input, and none allocates more
//	     than its input: the sizes a caller must allocate (the grain
//	     directory's) come from Header.Layout, which bounds them as QEMU
//	     7.2 does (L1 size at most 32 Mi entries, grain at most 1 GiB)
//	     and the caller bounds them again by the file's length.
//	KF2  Every rejection is an *Error whose text is QEMU 7.2's message
//	     for the same image (vmdk_open_vmdk4, vmdk_open_desc_file,
//	     vmdk_parse_extents, vmdk_add_extent), wrapping ErrCorrupt (a
//	     damaged image), ErrTooLarge (QEMU's EFBIG) or ErrUnsupported (a
//	     valid image, or one QEMU opens, that qring does not read:
//	     COWD, vmfs, seSparse).
//	KF3  The descriptor is read as QEMU reads it: createType is the text
//	     between `createType="` and the next quote, CID and parentCID
//	     are hexadecimal after the first occurrence of their name (C's
//	     strstr and sscanf "%x"), parentFileNameHint's value starts two
//	     bytes after its name and ends at the next quote (an empty one
//	     names no parent), and an extent line is what
//	     sscanf("%10s %lld %10s \"%511[^\n\r\"]\" %lld") matches; lines
//	     whose access is not RW, whose size is not positive or whose type
//	     is unknown are skipped, as QEMU skips them.
//	KF4  A sparse extent maps guest sector s (relative to the extent)
//	     through grain directory entry s / (GTEs x grain) and grain table
//	     entry (s / grain) mod GTEs; an entry 0 is unallocated, 1 is a
//	     zeroed grain when the header's zeroed-grain flag is set, any
//	     other value is the grain's sector in the file (a compressed
//	     extent's: its grain marker's).
//	KF5  A compressed grain is a zlib stream after a 12-byte marker
//	     (LBA, size) when the extent has markers, else at the grain's
//	     sector; Inflate yields at most the grain size and fails, as
//	     QEMU's uncompress does, on a stream that is damaged, empty, or
//	     inflates to more than the grain. EncodeGrain writes one so,
//	     marker first, zero-padded to a sector.
//	KF6  A new monolithicSparse or streamOptimized extent (version 3,
//	     compressed, with markers) is laid out as vmdk_init_extent
//	     and vmdk_co_do_create lay it out (NewPlan, Header.Encode,
//	     Plan.Directory, NewDescriptor): 64 KiB grains, 512 entries per
//	     table, the descriptor in sectors 1-20, then the redundant
//	     directory and its tables, the directory and its tables, the
//	     first grain on a grain boundary after them. NewPlan refuses
//	     sizes whose grain count or first grain's sector needs more than
//	     32 bits, where QEMU 7.2's arithmetic writes a broken image.
//	KF7  RewriteCID changes the CID as vmdk_write_cid does: the text
//	     after the first "CID" and its separator up to "parentCID" is
//	     replaced by the new value and a newline; a descriptor without
//	     "parentCID" is refused.
//	KF8  A new monolithicFlat, twoGbMaxExtentFlat or twoGbMaxExtentSparse
//	     image is a descriptor file naming its extents as
//	     vmdk_co_do_create names them (NewExtents, NewDescriptor): the
//	     image's name with "-flat", "-f001"... or "-s001"... before its
//	     last dot, relative to the descriptor's directory, split
//	     extents 2 GiB each but the last. A split sparse extent is a
//	     KF6 extent whose descriptor sectors are left empty. Flat images
//	     take no zeroed grains.
package format
