// Package vmdk reads VMDK images (QEMU's "vmdk" format) as a
// block.Device, the way QEMU 7.2's block/vmdk.c reads them, writes
// monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtentFlat
// and twoGbMaxExtentSparse ones, and creates them as qemu-img create -f
// vmdk does. The on-disk codecs are in vmdk/format; this package does the
// I/O.
//
// An image is a list of extents laid end to end. A monolithicSparse or
// streamOptimized image is one hosted sparse extent ("KDMV") with its
// descriptor embedded; monolithicFlat, twoGbMaxExtentSparse and
// twoGbMaxExtentFlat images are a text descriptor naming extent files
// (relative names resolve against the descriptor's directory, as QEMU
// resolves them). A flat extent is a window of its file; a sparse one
// maps grains through its grain directory and tables. An image may
// have a parent (parentFileNameHint: a VMware snapshot's base), another
// VMDK image under it. vmfs, vmfsSparse, seSparse and VMDK3 (COWD)
// extents are refused (format.ErrUnsupported).
//
// Invariants (cited as KD1..KD13; block's B1..B10 hold too):
//
//	KD1  Opened without Options.Writable, a Disk is read-only: Writev,
//	     WriteZeroes and Truncate fail with block.ErrReadOnly and change
//	     nothing; Flush has nothing to do.
//	KD2  Open reads the descriptor, each extent's header and grain
//	     directory once (a redundant grain directory only writes use,
//	     as in QEMU: Open refuses one QEMU's vmdk_init_tables cannot
//	     read, its offset negative or past the block layer's largest,
//	     and reads it only to open writable, KD8); after that a
//	     read-only Disk's state never
//	     changes, so requests need no lock (B1). Its grain tables are
//	     read per request (4 bytes per grain), never cached.
//	KD3  Every offset read from a file is checked against that file's
//	     length before use: a grain directory must lie within its file
//	     (Open refuses it otherwise) and is bounded by the file's length
//	     before it is allocated; a grain table entry or a grain that
//	     points past the end of its file fails the read that needs it.
//	     A compressed grain is inflated as a stream, bounded by the grain
//	     size (vmdk/format's KF5), so no allocation is sized by the image.
//	     Check, qemu-img check's walk, reads a table past the end of its
//	     file as zeros, as QEMU's vmdk_co_check does, and reports a grain
//	     past the end in its words.
//	KD4  Reads match QEMU's: an unallocated or zeroed grain reads as
//	     zeros, an allocated one from its file (a compressed one
//	     inflated), a flat extent from its file at its offset (zeros past
//	     the file's end); bytes past the virtual size read as zeros (B2).
//	KD5  Block status matches QEMU's vmdk_co_block_status: an
//	     unallocated grain is neither present nor data (and reads as
//	     zeros); a zeroed grain is present and zero; an allocated grain is
//	     data at its host offset, a compressed one data with no offset; a
//	     flat extent is its file's own data and holes at the same offsets
//	     (BDRV_BLOCK_RECURSE), one extent at a time.
//	KD6  A parent, as QEMU 7.2 reads one (vmdk_parent_open,
//	     vmdk_co_preadv, vmdk_is_cid_valid): the hint names it, relative
//	     to the image's directory; it is opened read-only as a VMDK
//	     image, with its own parent, by the caller (Options.OpenParent),
//	     and closed with the image. An unallocated grain reads from the
//	     parent (zeros past its end); a zeroed grain reads as zeros. A
//	     read that needs the parent fails with ErrParentCID when the
//	     parent's CID is not the image's parentCID; status, map and check
//	     never need it to match. Status through the chain (StatusAbove,
//	     Map, DataRun) takes an unallocated run's status from the parent,
//	     one layer deeper. Past the parent's end a run reads as zeros:
//	     Map shows it unallocated in this layer (qemu-img map), while
//	     StatusAbove has it zero and allocated in the parent (qemu-nbd's
//	     qemu:allocation-depth). State is fixed after Open as in KD2.
//	KD7  Create lays a new monolithicSparse image out byte for byte as
//	     QEMU 7.2's qemu-img create -f vmdk does (format's KF6), given
//	     the same CID: header, the redundant grain directory and its
//	     tables, the grain directory and its tables, the descriptor in
//	     sectors 1-20, the file ending where the first grain would go.
//	KD8  A monolithicSparse or streamOptimized image (one sparse
//	     extent in the image file; compressed ones with grain markers),
//	     or a descriptor file naming flat and uncompressed sparse
//	     extents (monolithicFlat, twoGbMaxExtentFlat,
//	     twoGbMaxExtentSparse), each in a file of its own (not named
//	     twice, not the descriptor's: writes into one would land in
//	     another), opens writable; with a parent, only with the parent
//	     open (KD13). Each sparse extent
//	     must have its grain directory not in a footer, every grain
//	     table (of both directories) allocated and inside its file, the
//	     tables mapping the whole extent (QEMU's 32-bit directory size
//	     can wrap), the embedded descriptor's 20 sectors clear of other
//	     metadata, every grain inside the file, and no grain or table
//	     overlapping another or the header, descriptor or directories
//	     (QEMU writes into such images all the same; reading them is
//	     safe: a redundant directory past the end of the file reads as
//	     zeros there, and QEMU writes new grains' entries into the
//	     header). An rgd_offset QEMU's shift wraps to 0 is no redundant
//	     directory, as in QEMU. Anything else is refused (format.ErrUnsupported or
//	     ErrCorrupt) and left as it was. A writable Disk reads
//	     every grain table at Open to check that (but those in a hole
//	     of the file, which map nothing), keeping none; a
//	     table is loaded into memory when a write first needs it, or
//	     a read while fewer than 2^25 entries are (8 bytes each);
//	     reads and writes use the loaded copy, reads of other tables
//	     the file's entries (Flush writes only loaded tables). At most
//	     2^26 entries are loaded (512 MiB; QEMU caches 16 tables): a
//	     write loads and pins every table it may need before anything
//	     changes, each in place of the least recently used table that
//	     no write pins and whose entries are all on disk (a table
//	     holding entries Flush has not written stays, so one dropped
//	     is as the file has it); when every loaded table holds such
//	     entries, Flush writes them first. Only a write needing more
//	     tables at once than the bound holds (a few concurrent
//	     writes' pins aside) is refused, before anything changes
//	     (ErrTooManyTables); WriteZeroes zeroes 2 GiB at a time (but
//	     in a streamOptimized image), so zeros over any span go
//	     through, as QEMU's, and a refusal leaves the chunks before
//	     it zeroed. A flat extent's bytes are written into its
//	     file in place, zeros too (QEMU's fallback writes zeros
//	     there); Flush flushes its file.
//	KD9  A new grain goes at free, which starts past everything the file
//	     holds at Open (rounded up to a grain, as QEMU rounds) and only
//	     grows, so a new grain reads as zeros where nothing was written
//	     into it, whatever a crash leaked there before; its entry is set
//	     in memory under the writer's lock, before the data is written,
//	     so writers into one new grain share it and a read sees zeros
//	     or what was written. Writes into allocated grains go to the
//	     file in place. Zeros over a whole grain of an image with
//	     zeroed grains make it a zeroed grain (its entry written at the
//	     next Flush, as a new grain's), as QEMU does; other zeros into an
//	     unallocated or zeroed grain leave it so (QEMU allocates it);
//	     Discard keeps the bytes, as QEMU's vmdk has no discard.
//	KD10 Flush makes the entries of the grains allocated in a sparse
//	     extent since the last Flush durable only after its file reaches
//	     past every one of them (grown under the writer's lock, so no write in flight is
//	     cut short; the entries taken as they are under that same lock:
//	     a later change waits for the next Flush) and their bytes are
//	     durable, then writes them into
//	     both directories' tables and flushes again: the table never
//	     maps a grain past the end of the file or one whose bytes could
//	     be lost. After a crash: leaked grains, never a wrong one.
//	KD11 The first write or zeroing of allocated bytes after Open gives
//	     the image a new CID before any byte the image maps changes, as
//	     QEMU's vmdk_pwritev does after the write (an image made on top
//	     of this one then refuses to read through it), and only once
//	     the write is not refused (a streamOptimized refusal, a changed
//	     parent: the image stays as it was, its CID too): a random one whose hexadecimal form is as long as
//	     the old, so only those bytes of the descriptor (at sector 1,
//	     whatever the header says, as QEMU) change, written in place and
//	     flushed before the write is issued. A descriptor file is
//	     rewritten whole, to its length rounded up to a sector (at most
//	     16 MiB, QEMU's bound), as QEMU writes it.
//	KD12 A streamOptimized image takes each grain once, whole (the last
//	     one up to the disk's end), as QEMU's vmdk does: deflated behind
//	     its grain marker (format.EncodeGrain) at free, a whole number of
//	     sectors, its entry set in memory only once its bytes are
//	     written; a partial grain fails with EINVAL (ErrStreamPartial), a
//	     second write or zeros into a written grain with EIO
//	     (ErrStreamAllocated), and so does a partial one whose first
//	     grain is written (QEMU asks that first), each refused before
//	     anything changes, the CID too (a write over whole grains one
//	     of which is written writes none of them; QEMU writes those
//	     before it; over a changed parent, ErrParentCID as in KD13).
//	     Zeros take whole grains too, as QEMU's fallback writes them: a
//	     deflated grain of zeros each (a zeroed grain's entry with
//	     zeroed grains, refused with EIO if the grain was written
//	     meanwhile: the zeros come after that write), partial ones
//	     EINVAL. Writes racing each other can still leave a grain of a
//	     refused write (two writers past the check). Flush treats its
//	     grains as KD10 says.
//	KD13 Over a parent (a snapshot), a new grain that read through to
//	     the parent gets the parent's bytes of the whole grain first
//	     (as QEMU's get_whole_cluster copies them), written at its place
//	     at free, and is mapped in memory only then: until then reads
//	     go on reading the parent, and other writers into that grain
//	     wait for it (so their bytes land after the copy, never under
//	     it), as does zeroing it whole; a failed copy leaks the space
//	     and maps nothing. A grain zeroed already reads zeros and takes
//	     no copy. Zeros into a grain that reads through are written
//	     into a new grain so (QEMU's fallback writes them), unless
//	     they zero it whole in an image with zeroed grains. A new grain
//	     over a parent whose CID no longer matches fails with
//	     ErrParentCID, as in QEMU. Create writes a snapshot's
//	     parentCID and parentFileNameHint as qemu-img create -b does
//	     (format's NewOptions.ParentHint).
package vmdk
