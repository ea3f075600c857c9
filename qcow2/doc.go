// Package qcow2 is the qcow2 engine: Create, Open, and an Image that reads
// and writes guest data, allocates clusters, maintains refcounts, and
// checks and repairs images. An Image is itself a block.Device (so it can
// be a backing file or sit under a filter), an io.ReaderAt and an
// io.WriterAt; it is safe for concurrent use.
//
// The engine depends only on block.Device; the binary picks the backend
// (io_uring, threads, or block.OSFile) through Options.Opener.
//
// Image.mu (QEMU's s->lock) guards the allocator, the refcount table and
// changes to the L1 table. Guest data I/O runs outside it.
// sched.ClusterLocks records in-flight allocations per guest cluster, each
// with its allocation's state: a write that touches such a cluster waits
// for that allocation only (QEMU's handle_dependencies), or writes early
// (Q10).
//
// Crash-consistency invariants (docs/crash-consistency.md explains them and
// how they are tested). Code cites them:
//
//	Q1  Allocation: a cluster's refcount increment is durable before any
//	    on-disk L2 or L1 entry points at it (L2 cache depends on the
//	    refcount cache; l2 allocation flushes the refcount cache). With
//	    lazy refcounts the dirty bit is durable first instead.
//	Q2  COW before link: when the bytes of a new cluster around the guest
//	    data were written by us (copied data, zero buffers, or a zeroing
//	    request) into space that may hold stale bytes, they are durable
//	    before the L2 entry (the L2 cache depends on a flush). Fresh space
//	    past the high-water mark is a hole and reads as zeros, so it needs
//	    neither zeroing nor the flush. With lazy refcounts, where no
//	    refcount dependency's flush orders the guest data before the
//	    link, every link depends on a flush (allocwrite.go linkLocked).
//	Q3  Freeing: the removal of the last reference is durable before the
//	    refcount decrement (the refcount cache depends on the L2 cache).
//	    Entries are modified and marked dirty before anything that may
//	    flush (QEMU c8bf9a9169). A host cluster whose last reference an
//	    L2 entry change dropped is not given out again (held.go) until
//	    that change is durable (a completed Flush, or the write and flush
//	    before a punched hole): else the next owner's data could reach
//	    the media before the change, and after a crash the old entry
//	    would read it (QEMU reuses such a cluster at once). Metadata
//	    paths that free clusters flush their change first.
//	Q4  New tables: a new L2 table or refcount block is written and
//	    flushed before the L1 / refcount table entry that points at it;
//	    a new refcount table is written and flushed before the header
//	    points at it (so are the blocks and table a repair rebuilds,
//	    rebuild.go, which go in clusters nothing references, or past
//	    the end of the file, and never overwrite the old ones). A failed write may have reached the media (any
//	    error but ENOSPC or EDQUOT, mayHaveLanded), and a failed flush
//	    may have kept it or not: when that write, or the flush after it,
//	    fails and it points at a table (the header naming a new L1,
//	    refcount or snapshot table, or with a new size or version; an
//	    L1 entry naming a new L2 table or a copy; the active L1 rewritten
//	    by a snapshot operation to name other tables, not one that only
//	    changes COPIED flags and names the same; a refcount table entry
//	    naming a new block),
//	    the media may name either the old or the new, so both are kept
//	    (the new one leaks if unnamed) and writes are refused until the
//	    image is reopened (ErrWritesLost, wrapping the failure): neither
//	    then misses a later change, and no repair frees what the media
//	    may name. A table that did not land and that a lock-free lookup
//	    may have found is held (Q12), not freed.
//	Q5  Zero before data: a zeroing of a cluster completes (or is linked
//	    ahead in the same io_uring submission) before the guest data write
//	    into it is issued.
//	Q6  COPIED == (refcount == 1) for every active L1 and standard L2
//	    entry; compressed entries never carry COPIED. A snapshot
//	    operation sets the flags by the counts once its counts are
//	    durable; if that fails, the flags stay owed and the next Flush
//	    or Close with no allocation in flight sets them. A CreateSnapshot
//	    that fails before its raised counts are durable takes them back.
//	Q7  One allocation per guest cluster at a time (sched.ClusterLocks);
//	    a new host cluster is reachable only by its allocator until it is
//	    ready (Q10) and by nobody else's reads until the L2 link. A write
//	    of whole clusters that need new ones allocates them as a run
//	    (allocrun.go): each cluster is still one allocation (its own
//	    registration, seal, link or undo), but they are planned under
//	    one hold of mu, written in one request per contiguous host
//	    range, and linked under one hold of mu; a cluster registered by
//	    someone else ends the run before it, so a run never waits while
//	    it holds registrations.
//	Q8  Dirty bit: set durably before the first refcount update is left
//	    unordered (lazy refcounts); cleared only after a full flush.
//	Q9  Corruption found on a write path marks the image corrupt and
//	    read-only instead of damaging it further (overlap checks); so
//	    does an L2 entry QEMU's lookups signal (a host offset that is
//	    not cluster aligned, an invalid subcluster bitmap) met by a
//	    read, write, zeroing, discard or block status (signal.go). An
//	    image marked corrupt opens read-only, or with
//	    Options.RefuseCorrupt a writable open fails (ErrMarkedCorrupt),
//	    as QEMU's does; Options.Repair opens it writable for Check.
//	Q10 Early writes (goal 3 of the QEMU series "qcow2: skip writing
//	    zero buffers to empty COW areas", v11 cover letter, qemu-devel
//	    2018-12/msg04342; QEMU left it as "TODO 1c"): once a new
//	    cluster's bytes around the allocator's data are final (copied,
//	    zeroed, or a fresh hole), other writes into the same cluster go
//	    straight to the host cluster without waiting for the L2 link.
//	    The cluster's sched.ClusterLocks registration carries the
//	    allocation's state, so a writer finds both in one place.
//	    inflight.go is the one place that decides: the allocator seals
//	    the allocation before it links (no early write starts after, and
//	    those in flight finish first), and an early write is
//	    acknowledged only once the cluster is linked, so every later read
//	    sees it; if the link fails, every early writer gets the error.
//	    The cluster is linked even if the allocator's own data write
//	    fails when an early write succeeded; so a cluster is ready
//	    before that write completes only where the range it writes reads
//	    as zeros already (a fresh hole over zeros, not over a backing
//	    file's data): else the failed range would read bytes it never
//	    held.
//	Q11 Fill ahead (prealloc-fill=zeroes): zeros are written only into
//	    space reserved ahead (never past the reserve's end: a fill never
//	    extends the file) and at or past the allocation frontier, which
//	    is at or past the high-water mark. A worker claims a piece under
//	    the filler's lock before writing it, starting at max(end of the
//	    claimed region, frontier); takeSpace (SP1) waits for claimed
//	    pieces in flight over the space it takes and moves the frontier
//	    past it in the same critical section, so no piece is claimed
//	    over it later. Space handed out past the filled region is
//	    skipped, not waited for: it is still fresh (unwritten extents
//	    read as zeros). Fills are never flushed and need not be: after a
//	    crash, zeros past the high-water mark are harmless, and a
//	    cluster allocated into filled space reads as zeros whether the
//	    fill or only the reservation reached the media. Close stops the
//	    filler and waits for pieces in flight before trimReserved
//	    truncates the reserve. A failed fill write turns filling off (an
//	    optimisation only).
//	Q12 Freeing vs lock-free requests: a write on the overwrite path,
//	    and a read, looks its cluster up and does its I/O inside the
//	    data gate (gate.go); a data cluster whose L2 entry changed is
//	    given out again only after every request that entered the gate
//	    before the change has left it, so no write lands in a cluster
//	    that was freed and handed to someone else, and no read returns
//	    its next owner's bytes. A discard or zero-with-unmap waits for
//	    them (sync) before it drops the references; that includes a
//	    cluster a zeroing kept first (ZeroAlloc), whose writers found it
//	    still Normal. A zeroing that keeps a cluster (or allocated
//	    subclusters, setting their zero bits) syncs too before it
//	    returns: a write that found the cluster Normal and landed after
//	    the zeroing was seen could come back when a later write reuses
//	    the cluster (it zeroes it first). An allocation's commit, which
//	    replaces a cluster under mu and may not wait, drops the
//	    reference and holds a cluster that fell to 0 (held.go) with a
//	    gate ticket: findFree skips it until the gate has passed the
//	    ticket, which the next flush or sync checks without waiting. So
//	    is an L2 table copied away from a stale non-COPIED L1 entry (a
//	    lookup may have loaded that entry), and so are the clusters
//	    whose last reference ApplySnapshot or DeleteSnapshot drops.
//	    Nothing waits for the gate under mu (a queue's owner may wait
//	    for mu while its requests hold tokens): CreateSnapshot, which
//	    must let no overwrite that found COPIED land after it, pauses
//	    the overwrite path and syncs before it takes mu
//	    (pauseOverwrites); overwrites that find a COPIED cluster
//	    meanwhile wait, then copy the shared cluster (writes that
//	    allocate never wait). The sync is bounded (ErrSnapshotBusy):
//	    a queue's owner may be waiting in such an overwrite. Until a discard has
//	    freed its old entries they keep their references: Check counts
//	    them (Image.freeing), and a Check with repair waits for
//	    allocations in flight (lockIdle), whose clusters are counted
//	    before they are linked.
//	Q13 Compressed clusters (compress_write.go, compress_free.go): a
//	    compressed entry over bytes that are not its stream does not read
//	    back as stale data but fails to decompress. So the stream is
//	    durable before the L2 entry that points at it (the L2 cache
//	    depends on a flush, as Q2, besides Q1), and a host cluster whose
//	    last compressed reference was dropped is held (held.go: findFree
//	    skips it) until a completed flush has made the removal durable,
//	    and the data gate has passed (Q12): else a crash could leave the
//	    old entry pointing at the new owner's bytes, or at the zeros of
//	    its COW. A stream is appended into a partly filled host cluster
//	    (Image.compFree) only while that cluster holds compressed
//	    streams: every path that can leave it free resets compFree (a
//	    refcount falling to 0, updateRefcountLocked; a rebuild of the
//	    refcount structures, which frees leaked clusters without it), so
//	    no stream lands in a cluster handed out whole meanwhile, whose
//	    refcount alone would not tell.
//	Q14 Queues (queue.go, block A1-A6): a queued read whose range is one
//	    run of host data, and a queued write inside one allocated COPIED
//	    cluster with no allocation of that cluster in flight (with
//	    extended L2: inside one cluster, and for a write every subcluster
//	    it touches allocated; queue_xl2.go), go straight
//	    to a queue on the device, translated, exactly as the synchronous
//	    read and overwrite paths would send them; a read of zeros with
//	    no backing file completes at once. A fast read or write holds the
//	    data gate (Q12) from its lookup until the owner reaps it, so a
//	    freer waits for it as for a synchronous request (the owner only
//	    looks up lock-free, and a freer holds nothing such a lookup
//	    waits for, so that wait ends when the device completes it).
//	    Allocating writes go to the queue's allocator (Q16); every other
//	    request, and every flush, runs the synchronous path on a
//	    goroutine (A4). The owner never blocks on I/O to look up: it only
//	    peeks at cached L2 slices (cache.Peek: no load, no write-back,
//	    which could wait for writes the owner has in flight); a miss
//	    takes the slow path, which loads the slice for the next request.
//	Q15 Close refuses (ErrQueueOpen) while a queue is open: its writes
//	    hold the gate and its device queue holds the device.
//	Q16 A queue's allocator (queue_alloc.go, queue_allocw.go) takes a
//	    queued write inside one cluster that needs a new cluster (with
//	    extended L2: that touches a subcluster not allocated yet; the
//	    link sets its bits, and the allocation is never ready for early
//	    writes). Two goroutines of the queue run it. The planner takes
//	    every such write that came in meanwhile as one batch: it plans
//	    every cluster under one hold of mu (registering each, Q7), runs
//	    the writes that need a copy or a zeroing first itself (only while
//	    the writer has nothing in flight: those writes may wait for the
//	    device's write lock, which the writer's writes hold until they
//	    are reaped, and never are once lost; until then the batch and
//	    those after it are held), and hands
//	    the plain fills (one request per cluster, as far as the device's
//	    limits on one request allow) to the writer, which sends them
//	    through a vector queue of its own and hands each allocation back
//	    as soon as its last write is reaped. The planner links what comes
//	    back under one hold of mu, sealing each first (Q10): the
//	    synchronous allocation's steps and order, with later batches
//	    planned and written while earlier ones are in flight. Only the
//	    writer has writes in flight on its queue, and it takes no lock
//	    held for long and waits for nothing but its writes and hand-offs:
//	    a holder of mu may wait for the device's write locks, which those
//	    writes hold until they are reaped. A write whose cluster is under
//	    another allocation, or was linked meanwhile, runs the synchronous
//	    path on a goroutine. If the vector queue fails for good with
//	    writes in flight, those writes may still land: their clusters
//	    are neither linked nor freed (leaked, and their early writers
//	    fail), and the image refuses writes from then on
//	    (ErrWritesLost). With extended L2 such a write may go into a
//	    cluster that stays linked (subclusters of it not allocated yet,
//	    and, when the write begins or ends inside an allocated one, bytes
//	    of that one): a guest read of its range may then see it land, as
//	    on a disk after a failed write. A panic on the slow path's
//	    goroutines fails its request (block A4); one in the planner or
//	    the writer is not recovered: it may come with mu held or an
//	    allocation half planned, and it ends the process.
//	Q17 Buffers a queue's caller registers (RegisterBuffers,
//	    queue_bufs.go) go to the device's queue at once and to the
//	    allocator's before the writer's next send, when it has nothing
//	    in flight. Only requests that carry the caller's buffer as it is
//	    gain from them: fast-path requests, and plain fills that are one
//	    piece (a padded fill goes as one vector). A refusal by the
//	    device's queue leaves the allocator's without them too; one by
//	    the allocator's (each ring pins the pages again, against
//	    RLIMIT_MEMLOCK for a user without CAP_IPC_LOCK) leaves only that
//	    one without them. Results are the same either way.
//	Q18 Resizing (resize.go; Truncate, Shrink, ApplySnapshot and
//	    CreateSnapshot hold resizeMu; SetVersion refuses with
//	    ErrResizeBusy while another does, and drops the zero clusters a
//	    failed growth left past the end before it downgrades): no guest
//	    byte lands past the virtual end, and a grown range reads as
//	    zeros. Shrink cuts the size guests may address (vsize) first,
//	    then waits for every write that checked against the old one:
//	    synchronous write calls hold Image.writers from before their
//	    size check to their return; a queue's fast writes hold the data
//	    gate and check the size again inside it; its allocator checks
//	    under mu and registers its clusters (Q7), which Shrink's own
//	    zeroing and discard wait for. The waits are bounded
//	    (ErrResizeBusy), and a refused Shrink has changed nothing: what
//	    treats the end of the disk specially (a partial last cluster
//	    taken whole) goes by the header's size (hsize), not the cut, and
//	    so does an encrypted write's read-modify-write of the sector
//	    across the cut. Then the last cluster is zeroed past the new end
//	    if it holds data, the clusters past it become unallocated
//	    (QEMU's full discard, asked for by Shrink only: no zero flag
//	    past the end), and the header changes last, after a flush. A
//	    growth zeroes, before its header change and behind a flush, what
//	    the new range would show that is not zeros: the old end's
//	    cluster past the old end when it holds data (QEMU's shrink
//	    leaves it), once no allocation of it is in flight, and the range
//	    a backing file reaches (zero clusters; version 2 refuses, as
//	    QEMU). Guests still see the old size meanwhile, so none writes
//	    there. A failed size change in the header refuses writes (Q4).
//	    Once writes are refused (closed, corrupt, lost), no allocation
//	    or zeroing is planned, even by a write that passed its lock-free
//	    check before.
//	Q19 Damaged tables (damage.go): a writable open refuses an image
//	    whose L1 or refcount table entries are invalid, whose tables
//	    overlap (the snapshot table and the snapshots' L1 tables
//	    included: a snapshot change frees their clusters), or whose
//	    snapshot table does not parse. A read-only or
//	    repairing open accepts it, as QEMU's does, so that check, info
//	    and reads work: it then refuses every write (not even the
//	    dirty-bit repair runs), a read through a damaged L1 entry fails
//	    with ErrCorrupt, and Check reports the damage and repairs
//	    nothing, unless all of it lies in the refcount structures (their
//	    table's entries, a table or block overlapping another table):
//	    then -r all rebuilds them (rebuild.go) and the image is writable
//	    again in the same open. An open for check (Options.Check) also
//	    takes a header without a refcount table (refcount damage) or
//	    with a table in the header cluster (format.ParseHeaderForCheck);
//	    a snapshot entry whose L1 table cannot be one is left out of
//	    the snapshots the engine uses, and reported.
//	Q20 A read takes an L2 entry whose only defect is reserved bits with
//	    those bits masked off, and a compressed entry with COPIED set
//	    without it, as QEMU's reads do (l2.go readableEntry);
//	    Check reports the entry and counts its cluster, and writes,
//	    zeroing and discards through it fail with ErrCorrupt (a zeroing
//	    of part of it that already reads as zeros writes nothing, as it
//	    looks the way a read does). Every other invalid entry fails the
//	    read. The snapshot operations count such an entry as QEMU's
//	    qcow2_update_snapshot_refcount does (snapshot.go walkRefTree):
//	    they keep the reserved bits and clear the compressed entry's
//	    COPIED with the others (copiedByCountsLocked too).
//	Q21 The host space of clusters a Discard or an unmapping WriteZeroes
//	    frees goes back to the file system (zero.go punchFreed; QEMU's
//	    pass-discard-request, off with Options.NoPassDiscard): after the
//	    gate has passed, once the L2 changes that dropped them are
//	    durable, and before the references drop; only for clusters the
//	    freed entry is the last reference to, never compressed ones.
//	    Nothing can read them through the old entries then, no table on
//	    the media points at them, and nothing can allocate them yet.
//	    Only on devices that zero efficiently, so a refused punch never
//	    writes zeros.
//	Q22 Persistent dirty bitmaps are maintained as QEMU maintains them
//	    (bitmaps.go): a writable open sets IN_USE on every bitmap it
//	    loads, durably, before the first write; every write, zeroing,
//	    discard and compressed write sets its range's bits in the
//	    enabled ones before it starts (a queue's, when submitted), and
//	    again once it is done (a queue's, as it is reaped), as QEMU marks
//	    at completion: a bitmap cleared, added or enabled while it was in
//	    flight still records it; Close,
//	    after its flush, refuses new writes and waits for those in
//	    flight (else leaves the bitmaps IN_USE), writes each changed
//	    bitmap to new clusters,
//	    flushes, names them in a new directory (still IN_USE) that the
//	    header then names (QEMU's update_ext_header_and_dir), flushes,
//	    frees the old ones and clears IN_USE. A directory written
//	    before then (a bitmap added or removed) names every maintained
//	    bitmap IN_USE, with the table the media hold, and the entries'
//	    places change in memory only once the header names it; no
//	    bitmap covers an empty disk (QEMU refuses its empty table). A
//	    bitmap on the media is therefore IN_USE (stale for QEMU) or
//	    holds every write made durable before it, whatever crashes or
//	    fails. What cannot be
//	    maintained (unknown flags or types, extra data, a table past
//	    QEMU's bounds, a cluster that is metadata, free or named twice,
//	    by any bitmap, IN_USE ones included; a table of another size in
//	    a bitmap not IN_USE) makes the writable open fail, having
//	    written nothing, as QEMU refuses it (a dirty image's bitmaps are
//	    checked before its repair, without its refcounts; should its
//	    repaired refcounts then refuse them, the open clears the
//	    bitmaps' autoclear bit, durably before the first write, as a
//	    program without bitmap support does, as Options.NoBitmaps asks). A resize resizes them before guests see the new
//	    size (bitmaps_resize.go; bits in shared chunks, bitmap_words.go,
//	    so none set meanwhile is lost), and is refused while one is
//	    inconsistent, as in QEMU; a downgrade, or a size change whose
//	    header write failed, stops the maintenance and leaves them
//	    IN_USE; an applied snapshot or MakeEmpty dirties the whole disk.
//	    Options.NoBitmaps opts out.
//	Q23 A backing file of another format (a VMDK or VHD image; QEMU's
//	    `-F vmdk`, `-F vpc`) is opened by the caller's
//	    Options.OpenBacking, read-only, as a Layer (layer.go): the engine
//	    reads it as any backing device, never writes it, and walks block
//	    status through it by its own LayerStatus and LayerBacking (map,
//	    StatusWalker, the NBD server's allocation), as QEMU's block layer
//	    walks a chain through that driver. Without OpenBacking such a
//	    backing file is a *FormatError, as before. A backing file name
//	    that is a "json:{...}" spec (QEMU's pseudo-protocol; its file
//	    names relative to the working directory, as QEMU reads them) goes
//	    to OpenBacking too, which opens the driver tree (backing.go,
//	    openSpecBacking); without OpenBacking it is refused. The chain
//	    above travels with it, and an image whose file is already in the
//	    chain refuses to open (ErrBackingLoop); a qcow2 node on no single
//	    file (quorum, blkverify) has no file to compare, so more than 64
//	    json: names in one chain are ErrBackingLoop too: a spec cannot
//	    loop. The name comes from the image, not the user: the tools'
//	    opener refuses nodes that write files (a mirror).
//
// External data files (datafile.go; QEMU's data_file, incompatible bit
// 2, and data_file_raw, autoclear bit 1):
//
//	DF1 The image file keeps the metadata; guest cluster data lives in
//	    the data file at its guest offset. The data file is the device
//	    Options.DataDevice gives, else the header extension's name,
//	    opened as it is (QEMU 7.2 resolves it against the working
//	    directory, not the image's). An image with the bit and no name
//	    fails to open (ErrDataFileRequired), so does one with the raw
//	    bit without the bit (ErrDataFileRawAlone) and a missing file
//	    (DataFileOpenError); the extension without the bit is ignored.
//	    Every such error matches ErrDataFile. Create makes the data file
//	    and links every cluster in place with data_file_raw or any
//	    preallocation, as qemu-img create 7.2 (create_datafile.go).
//	    It is locked as QEMU 7.2 locks it: the image's permissions,
//	    sharing all but resize (a reader shares writes).
//	    Options.NoDataFile opens the metadata only, as QEMU's
//	    BDRV_O_NO_IO (qemu-img info): data reads fail (ErrNoDataFile).
//	    Reads of data (encrypted ones too: the sectors are numbered by
//	    their offset in the data file, the guest's), and Map's look at
//	    host holes, go to the data file; bytes past its end read as
//	    zeros.
//	DF2 An entry with host offset 0 and COPIED (not zero, not
//	    compressed) is allocated at host offset 0 (QEMU's
//	    qcow2_get_cluster_type: the data file's clusters always carry
//	    COPIED). A lookup that finds a compressed entry, or an
//	    allocated one whose host offset is not its guest cluster's
//	    offset, fails as QEMU's qcow2_get_host_offset does: a
//	    fatalEntryError (Q9).
//	DF3 Data clusters are not refcounted: Check counts none of them
//	    (no leak, no overlap with the image file's clusters), expects
//	    COPIED on every allocated entry (their implicit refcount is 1),
//	    and reports a compressed entry (QEMU's check_refcounts_l2).
//	DF4 Writes (datafile_write.go) put guest data in the data file at
//	    its guest offset: a write into an allocated cluster goes there
//	    directly; a first write into a cluster registers it (Q7), writes
//	    the whole cluster (the data and, around it, zeros or the backing
//	    file's bytes: the data file may hold stale bytes there, and
//	    QEMU's COW writes the whole cluster too, the last one past the
//	    disk's end included) and links it with COPIED. No host space is
//	    taken and no refcount changes (DF3): the image file's space rules
//	    (SP*, the reserve, fill, fresh space) and early writes (Q10) do
//	    not apply; a zeroing or discard that drops an entry frees
//	    nothing in the image file (DF7 punches the data file). A Queue sends every request of such an image down the
//	    synchronous path (its fast path and its allocator address the
//	    image's own device). An encrypted image's data goes there as
//	    ciphertext, sectors numbered by their data file offset (DF1).
//	    With extended L2 (datafile_xl2.go) the cluster's place is the
//	    same, but only the bytes QEMU 7.2's calculate_l2_meta names are
//	    written: the guest data and the COW of the partial subclusters
//	    at its ends (from the backing file or zeros, through the old
//	    entry); a first write and a write into unallocated subclusters
//	    of an allocated cluster link by setting the written
//	    subclusters' allocation bits (clearing their zero bits), and a
//	    write into allocated subclusters goes in place. Zero writes and
//	    discards set zero bits and drop entries as without a data file
//	    (xl2zero.go), freeing nothing; a preallocation (Create, a
//	    resize) links clusters with their bitmap as it was, as QEMU
//	    does, and the data file reaches the last subcluster's end.
//	DF5 The data a new L2 entry links is durable before the entry (a
//	    subcluster's allocation bit too): the write that fills the
//	    cluster or subclusters completes before the link, and the
//	    L2 cache's write-back flushes the data file first when such a
//	    write came since its last flush (as QEMU flushes the data file
//	    before the image file's metadata). Flush and Close flush the data
//	    file before the metadata's write-back.
//	DF6 As QEMU 7.2: with data_file_raw, a zero write zeroes the data
//	    file's range before the entries change (qcow2_subcluster_zeroize),
//	    and the whole (sub)cluster of an unaligned edge that becomes (or
//	    is) a zero one, with the guest cluster registered and mu not
//	    held (dfZeroRawEdge); an Allocate not aligned to the data file's
//	    blocks zeroes their partial ones as QEMU's fallocate does,
//	    but not on an encrypted image (unlike QEMU): its data file holds
//	    ciphertext, and plaintext zeros under entries that still map them
//	    (the edges of an unaligned range, or after a crash before the
//	    entries) would decrypt into garbage; the zero flags say zeros;
//	    a resize grows or shrinks
//	    the data file with the disk (before the header shows a larger
//	    size, after it shows a smaller one; a growth first cuts, durably,
//	    a data file longer than the old disk, which a shrink a crash
//	    interrupted leaves, so the grown range reads as zeros) and, raw,
//	    links the grown
//	    range's clusters in place (QEMU's metadata preallocation, which
//	    a resize with any preallocation mode does too; falloc and full
//	    then give the data file's grown range its space, reserved or
//	    written with zeros, as QEMU 7.2 truncates the data file with the
//	    mode); compressed writes, internal
//	    snapshots and a downgrade to version 2 are refused
//	    (ErrUnsupported).
//	DF7 As QEMU 7.2 with pass-discard-request (qcow2_free_any_cluster): a
//	    Discard or an unmapping WriteZeroes that drops a cluster's
//	    allocation (a normal or zero-allocated entry, raw or not, extended
//	    L2 or not) punches the cluster's range of the data file
//	    (datafile_discard.go), unless Options.NoPassDiscard. Like the
//	    image file's punches (Q21): after the gate has passed (no request
//	    uses the old entries), after the tables without the entries are
//	    written and the image file flushed (no table on the media points
//	    into a hole: an encrypted cluster would read as garbage), only on
//	    a data file that zeroes efficiently (a raw one on any: it must
//	    equal the disk), best effort. Adjacent
//	    clusters make one hole (QEMU discards a cluster at a time, so its
//	    512-byte clusters free no file system block). Each run is
//	    registered (Q7) while its hole is made, and a cluster linked again
//	    since its drop (a first write won the race) is left out: a hole
//	    never lands under a link.
//
// Host space (space.go owns it; every allocator of data clusters, L2
// tables, refcount blocks, a new refcount table or a new L1 table takes
// space through takeSpace):
//
//	SP1  Nothing below the high-water mark is ever zeroed, filled or
//	     truncated: reservations (and the give-back of the holes below
//	     the reserve proper) start at or past it (the mark before the
//	     range being taken, which nobody has written yet), fill pieces
//	     lie at or past the fill frontier (>= the mark), the reserve is
//	     trimmed back to it at close. Every byte that holds or may hold
//	     data or metadata is below it. Asserted in -tags invariants
//	     builds.
//	SP2  Every byte at or past the high-water mark reads as zeros: it
//	     was never handed out since open (past the file's end at open,
//	     with the mark rounded up to a cluster when the file ends inside
//	     one, and past every table the open let by in the cluster of
//	     slack after the end, which the engine may write in place), and
//	     only reservations and fills write there.
//	SP3  A range is fresh (needs no zeroing, Q2) only if it lies wholly at
//	     or past the mark before it is taken and inside the reserve.
//	SP4  Taking space raises the mark before anything is written there,
//	     and reserves ahead when the range is new, so a table placed past
//	     the reserve's end is below the mark before the next reservation.
//
// Locking: the read path and the in-place overwrite path take no
// image-wide lock: the L1 is read atomically, an L2 entry under its
// table's lock, and size/state/high-water mark from atomics. Allocation,
// refcounts and the caches' dependency state are under Image.mu.
// A function that takes Image.mu releases it before it returns; functions
// named *Locked run with it held by their caller (and alloc.go's with it
// held throughout). allocwrite.go follows one allocation this way.
//
// After a crash at any point: leaks are allowed, corruption never, and
// data written before a completed Flush reads back. A write no completed
// Flush covers may be lost, wholly or in part, but only lost: each byte
// reads a value it held since that Flush (old or new), never stale bytes
// of reused space or zeros where data was (torture_held_test.go checks
// it at every crash clone).
package qcow2
