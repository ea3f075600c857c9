// Package uring is qring's host I/O layer: a block.Device (File) over a
// file, doing its I/O on a Linux io_uring, with a plain-syscall backend
// (Threads) for comparison and as a fallback.
//
// The ring uses only the ABI layer github.com/iceber/iouring-go/syscall
// (setup/register constants, SQE/CQE layouts) and golang.org/x/sys/unix
// (mmap, syscalls); never the iceber root package.
//
// # Layers
//
// File keeps every rule of the device (U1-U15 below, and block's B1-B10)
// and hands each request to one of three small backends behind the
// internal backend interface (backend.go): one call, one request to the
// kernel.
//
//	File (file.go, open.go, rw.go, eofgate.go, zero.go, refused.go, linked.go, bounce.go)
//	  │ backend: rw, fallocate, fdatasync, close; linker: linked (U4)
//	  ├─► ringIO  (ring_io.go)   Backend Ring
//	  ├─► syncIO  (sync_io.go)   Backend Threads: pread/pwrite(v), fallocate(2)
//	  └─► hybrid  (backend.go)   ringIO with a syncIO shortcut (U8)
//
// The ring itself, one idea a file: ring.go (the ring and its slots),
// setup.go and probe.go (io_uring_setup, mmap, the opcode probe),
// sqe.go (the one function that fills an SQE), submit.go (publishing
// and submit-only enters: R1, R7), lead.go (waiting, the leader, reaping:
// R2, R3), merge.go (R8), request.go (one request from slot to result).
//
// # Ring layout
//
//	ringIO ──► ring: SQ ring  (head: kernel, tail: us)     ┐ mmap'd, shared
//	                 CQ ring  (head: us,     tail: kernel) ┘ with the kernel
//	                 SQE array [2*Entries]
//	                 slots     [Entries]  one per request in flight
//	                   res[2], ch (cap 2), iov    user_data = slot*2 + k
//	                 free      chan of slot indices (preallocated)
//
// # Invariants
//
//	R1  Memory ordering (io_uring(7), "Submission queue polling" and the
//	    ring-buffer sections; liburing's io_uring_smp_store_release /
//	    io_uring_smp_load_acquire). The SQ tail and CQ head are written
//	    only by us, the SQ head and CQ tail only by the kernel. We fill the
//	    SQE, then publish it with an atomic store of the SQ tail (release:
//	    the kernel must see the SQE body before the tail). We load the CQ
//	    tail atomically (acquire: CQE bodies written before the kernel's
//	    tail store are visible) before reading CQEs, and store the CQ head
//	    atomically after we are done reading them (release: the kernel may
//	    then overwrite those entries). The SQ head is loaded atomically to
//	    count unconsumed SQEs. Go's sync/atomic operations are sequentially
//	    consistent, which is stronger than the acquire/release io_uring(7)
//	    asks for. The SQ index array is identity-mapped once at setup.
//	R2  Only the goroutine holding ring.mu writes SQEs and the SQ tail; only
//	    the leader (holder of ring.enterMu) reads CQEs and writes the CQ
//	    head. A waiter that wins enterMu.TryLock becomes the leader: it does
//	    io_uring_enter(to_submit = all queued, min_complete = 1, GETEVENTS),
//	    which submits every goroutine's queued SQEs in one call, then reaps
//	    every CQE and signals each slot's channel; it stays leader until its
//	    own request completes. So there is no completion goroutine and, for
//	    the leader, no hand-off at all. Other waiters park on their slot
//	    channel or on the leader token; while fewer than submitThreshold
//	    data SQEs are in the kernel (1: none), or while at most shallow
//	    requests are outstanding and the leader is asleep in the kernel,
//	    they first submit with a submit-only enter (one at a time, so
//	    concurrent arrivals batch); otherwise they leave their SQE to the
//	    leader's next enter, which a completion of one of the (more
//	    than shallow) requests outstanding brings soon. Standalone fsyncs and
//	    fallocates (ring.slow) are not counted: their completion may be a
//	    second away, and requests left behind them would wait for it. At
//	    low depth a data request's completion is a whole request's
//	    latency away, and each request waited for the one before. The
//	    leader raises ring.asleep before it computes to_submit and a
//	    waiter loads it after queueing, so either the leader's enter
//	    carries the waiter's SQE or the waiter submits it. Before blocking in the kernel again, a leader that woke
//	    waiters yields (runtime.Gosched) so they run on its P and queue
//	    their next requests first: that is what makes one enter carry many
//	    SQEs at QD64.
//	R3  No lost wake-up: a leader that leaves while requests are still
//	    outstanding (ring.waiting > 0) puts a token in leaderCh; a parked
//	    waiter takes it and tries to lead. ring.waiting is raised before an
//	    SQE is queued and the leader unlocks enterMu before reading it, so
//	    either the leader sees the newcomer or the newcomer's TryLock wins.
//	R4  No SQ/CQ overflow by construction: a request owns one slot and at
//	    most two SQEs, the SQ has 2*Entries entries and the CQ (kernel
//	    default) twice that. Overflow flags are still counted in Metrics.
//	R5  Zero allocations in steady state: slots, iovec arrays, channels and
//	    the free list are preallocated and reused; user_data is a slot
//	    index, not a pointer. Buffer addresses are stored as real pointers
//	    in the slot's iovec array, so the caller's buffers escape to the
//	    heap (never moved by stack growth while the kernel uses them); the
//	    slot clears them when freed so it never pins caller memory.
//	R6  -EAGAIN/-EINTR completions are resubmitted; short transfers resubmit
//	    the remainder; a read that returns 0 fills zeros (block B2); a write that
//	    returns 0 is ENOSPC. On O_DIRECT a read that stops at an unaligned
//	    offset has reached EOF (the rest reads as zeros), a write that does
//	    resumes from the aligned offset before, and a remainder whose
//	    buffer address is no longer aligned is bounced (U1). A vector
//	    goes to the kernel in chunks of at most IOV_MAX buffers and
//	    maxRW (1 GiB) bytes, cut between buffers or inside a first
//	    buffer longer than that (nextChunk): the kernel moves at most
//	    MAX_RW_COUNT (2 GiB - 4 KiB) a call, which on O_DIRECT with
//	    sectors above 4 KiB (Linux 6.18 takes them, e.g. on a loop
//	    device) is no whole sector, and the call failed with EINVAL.
//	R7  Every to_submit is exact. The kernel consumes to_submit SQEs from
//	    its head; if that count were stale (head moved by a concurrent
//	    enter) it could end between the two SQEs of a linked pair, and the
//	    kernel would submit the dangling fallocate alone and the write
//	    later, unordered. So to_submit is computed under subMu; the leader
//	    releases subMu before its submit+wait enter, and a submitter that
//	    finds head short of the leader's published leaderEnd waits until
//	    the kernel has consumed the leader's batch (or the leader left).
//	    Tails are published one request (one pair) at a time, so a
//	    to_submit of tail-head always ends on a request boundary.
//	R8  Merging (QEMU's virtio-blk request merging, the block layer's
//	    plug merge): a plain read/write SQE is staged, filled but not
//	    published (the SQ tail the kernel sees stays behind ring.tail),
//	    and a later request of the same kind on the same descriptor that
//	    starts where a staged SQE ends rides on it: its iovecs are appended
//	    to the staged SQE's array (preallocated with mergeIov entries, so
//	    the array never moves) and the SQE becomes a readv/writev of the
//	    whole run (at most mergeBytes, and at most IOV_MAX iovecs even
//	    when a long vector grew the array: the kernel refuses more). Only unpublished SQEs are changed,
//	    under ring.mu, so the kernel never reads an SQE being edited. Every
//	    enter publishes staged SQEs first (under subMu, before to_submit is
//	    computed: R7 holds), and any other queueing publishes them too, so
//	    a staged request waits exactly like a queued one did. On
//	    completion the result is split in order: each request gets its own
//	    share; one the transfer did not reach gets -EAGAIN and resubmits
//	    (R6); on an error or a zero result every request resubmits alone
//	    (noMerge), so errors stay exact per request. Adjacent requests in
//	    flight together carry no ordering promise between them, so one
//	    SQE for both changes no semantics. Linked chains, fallocates and
//	    fsyncs are never merged. Options.NoMerge turns it off.
//	R9  Optional ring features are taken only when the kernel accepts
//	    them, and a refusal is never an error (ringfeat.go):
//	    COOP_TASKRUN (no interrupt per completion: a submitting thread
//	    that sleeps is still woken to post it, a running one posts it on
//	    its next kernel entry), the descriptor registered as fixed file
//	    0, and on writable Files block.ZeroBuf registered as fixed buffer
//	    0 (writes from it pin no pages per request). fill is the only place an SQE is
//	    rewritten for them. close unregisters the file before closing
//	    the ring: the registration holds the open file, and its locks
//	    must be released when Close returns. File.RingFeatures names
//	    what a ring has.
//
// # File
//
//	U1  A Direct file has one descriptor, O_DIRECT, and never does buffered
//	    I/O: buffered and direct I/O in flight on the same page are not
//	    coherent (a dirty page with stale bytes is written back over a
//	    direct write, the kernel logs "Page cache invalidation failure on
//	    direct I/O" and fdatasync returns EIO; a buffered read can cache
//	    stale bytes). Requests whose offset, length or buffers are not
//	    aligned (Caps().Align, Caps().MemAlign) are padded to the alignment
//	    and bounced through aligned buffers (bounce.go; QEMU's padded
//	    requests): a read reads the padded range and copies out, without
//	    a lock (old or new data per aligned block: block B1); a write with
//	    aligned offset and length only copies; any other write is a
//	    read-modify-write of the padded range. wmu (RWMutex) orders them:
//	    every write, fallocate and linked ZeroThenWritev holds it shared
//	    for its duration (merged SQEs included: each request holds it
//	    until its own share completed); a read-modify-write and Truncate
//	    hold it exclusively. Size and DataRun must not see the file
//	    padded past its end either, but take padMu, which only a
//	    read-modify-write that may pad past the end holds, inside wmu:
//	    on wmu they could queue behind a read-modify-write waiting for a
//	    queue's writes, and block that queue's owner (U10, block A3). So nothing else
//	    modifies the file meanwhile: the padding is written back as it
//	    was, and ftruncate's zeroing of a partial block in the page cache
//	    races no direct write. A misaligned write therefore waits for every
//	    write in flight, not only overlapping ones (rare on O_DIRECT
//	    images). If the padded write grew the file past the request's end,
//	    the size is set back under the same hold. Buffered files use the
//	    kernel as is.
//	U2  WriteZeroes with Allocate is fallocate(ZERO_RANGE) (no KEEP_SIZE, so
//	    it grows the file), or ErrNotSupported with nothing written: when
//	    the range is not aligned to Caps().ZeroAlign, or when the
//	    filesystem refused ZERO_RANGE (EOPNOTSUPP/EINVAL, e.g. tmpfs), after
//	    which Caps() drops Allocate. Where Open believes it works, the
//	    fallocate is FALLOC_FL_WRITE_ZEROES instead (Linux 6.17+, "fs:
//	    introduce FALLOC_FL_WRITE_ZEROES to fallocate",
//	    https://git.kernel.org/torvalds/c/7bd43cc79cab3850f34da0a31d5b042b701590ef):
//	    written extents the device zeroed by unmapping, so first writes
//	    into them convert nothing (ZERO_RANGE leaves unwritten extents;
//	    Caps().AllocWritten says which, block B9). The belief comes from
//	    the kernel release, the filesystem (ext4, or a block device) and
//	    the file's block device, whose sysfs
//	    queue/write_zeroes_unmap_max_bytes must be > 0 (ext4 and the block
//	    layer refuse the flag otherwise), never from a probe that writes;
//	    Options.NoWriteZeroes turns it off. The first refusal (as above)
//	    turns it off for good and the same request goes on with
//	    ZERO_RANGE; other errors are the request's. Either way, efficient
//	    or refused: never zero buffers. A refusal by the kernel is a
//	    RefusedError (ErrNotSupported and the errno) naming the mode
//	    refused: ZERO_RANGE, or WRITE_ZEROES on a block device (U15).
//	    File.Zeroing says which mode is in
//	    use and why; Metrics count the WRITE_ZEROES calls and refusals.
//	    The linked ZeroThenWritev (U4) uses ZERO_RANGE (WRITE_ZEROES on
//	    a block device, where ZERO_RANGE may write zeros: U15).
//	    ZeroAlign is the filesystem block (the larger of st_blksize and
//	    statfs f_bsize, at most 64 KiB; a block device's logical sector),
//	    never less than Align: filesystems zero
//	    partial blocks through the page cache (ext4 also fails the
//	    unwritten-extent conversion of direct writes in flight in that
//	    block, and fdatasync returns EIO). Without Allocate: PUNCH_HOLE|
//	    KEEP_SIZE first with MayUnmap (only inside EOF: it cannot grow the
//	    file), then ZERO_RANGE, then zero buffers; on a Direct file only the
//	    whole ZeroAlign blocks of the range are fallocated and the partial
//	    ones at its edges get zero buffers. PUNCH_HOLE is never combined
//	    with ZERO_RANGE.
//	U3  EOF gate (QEMU 292d06b925): File.eof is a lower bound of the file
//	    size. A write ending past it holds eofGate shared; a fallocate
//	    ending past it holds eofGate exclusively, so a size-extending
//	    fallocate never runs concurrently with a write past the old EOF.
//	    Only such a request raises eof, under the gate: one inside eof
//	    may race a Truncate (exclusive) that shrinks the file below its
//	    end, and raising eof after it would leave eof past the size.
//	    Such a request would then grow the file without the gate. On a
//	    Direct file it looks at eof again once it holds wmu, which a
//	    Truncate holds exclusively, and takes the gate after all if it
//	    now ends past eof (eofgate.go, lockWMU; a queue's write with a
//	    Try). A buffered file keeps that window: there the kernel
//	    serialises a write and a fallocate on the inode lock (ext4,
//	    XFS, tmpfs, NFS and FUSE take i_rwsem exclusively for both),
//	    and the race the gate prevents is between direct writes, which
//	    take it shared (XFS's IOLOCK).
//	U4  ZeroThenWritev with Allocate on the ring is one submission of
//	    FALLOCATE linked (IOSQE_IO_LINK) to the write; if the fallocate
//	    fails its error is returned, mapped as in U2. The kernel does not
//	    cancel the write then (IORING_OP_FALLOCATE does not fail its
//	    link: Linux 6.18 runs the write), so the linked submission is
//	    used only once an Allocate zeroing has succeeded on the File: the
//	    first one (and a refused mode) runs as a zeroing then a write,
//	    and a refusal writes nothing. Only a write that chunked would
//	    send in one call is linked (at most IOV_MAX buffers and maxRW
//	    bytes, R6); a longer one is a zeroing then a chunked write.
//	U5  Close waits for requests in flight (they complete normally), makes
//	    requests waiting for a ring slot fail with os.ErrClosed, then frees
//	    the ring and the descriptor; later calls return os.ErrClosed.
//	U6  Errors wrap the errno (block.OpError → unix.Errno), so
//	    errors.Is(err, unix.EIO) works.
//	U7  Caps().ReqFlags is 0: requests carrying Serialising or NoWait get
//	    ErrNotSupported (the engine serialises via sched).
//	U8  Options.SyscallFallocate sends standalone fallocates to fallocate(2)
//	    (IORING_OP_FALLOCATE always runs in io-wq); so do kernels without
//	    that opcode. Options.Hybrid serves a data request with a plain
//	    syscall while no other is in progress and uses the ring as soon
//	    as requests overlap. Both are off by default.
//	U9  Caps().Media is detected once at Open from the file's filesystem
//	    and block device (sysfs): tmpfs, zram, brd, pmem and loops over
//	    them are RAM; otherwise queue/rotational picks HDD or SSD; what
//	    cannot be resolved is MediaUnknown. Caps().Metered is set when
//	    the process's cgroup (or an ancestor) limits writes to that device
//	    (v1 blkio.throttle.write_*_device, v2 io.max wbps/wiops). Both are
//	    hints for strategy choices, never for correctness.
//
// # Queue
//
// File.NewQueue gives a block.Queue (block A1-A6) with an io_uring of its
// own (queue.go). One goroutine owns it (A1), so none of R2, R3, R7 or R8
// applies: Submit fills an SQE per request and submits them with one
// enter; Wait takes what is ready, reaps the CQ, and only when nothing
// is there enters the kernel once for every completion the ring still
// owes it.
//
//	U10 The ring takes a read or write only as File would send it
//	    straight to the kernel: at most maxRW and O_DIRECT-aligned (U1).
//	    It holds File's locks as File.writev would, from submission until
//	    the owner reaps the request, each taken with a Try: an O_DIRECT
//	    write holds wmu shared, and a write ending past File.eof holds
//	    eofGate shared (U3) and raises eof when it completes whole. A
//	    read-modify-write waiting for wmu, or an extending fallocate
//	    waiting for eofGate, waits for this queue's writes, so the owner
//	    must never block on them (A3), nor take them shared as a
//	    synchronous File write does (a Go RWMutex queues a reader
//	    behind a waiting writer); a Try that fails sends the request
//	    the slow way. The rest, and the remainder of a short transfer,
//	    run through File's own readv/writev on a goroutine (A4);
//	    -EAGAIN/-EINTR resubmit (R6). A flush always runs File's own
//	    Flush on a goroutine (U14: it may wait for another). A zeroing always runs File's own WriteZeroes path
//	    on a goroutine: an extending fallocate waits for eofGate, and
//	    without Allocate a refused fallocate, or the partial blocks at
//	    the edges of an O_DIRECT range, become writes of zeros (a
//	    read-modify-write under wmu). A discard is ErrNotSupported (a
//	    File is no block.Discarder).
//	U11 An eventfd read is always armed on the queue's ring (user_data
//	    wakeTag); slow completions and Wake write the eventfd when the
//	    owner has said it sleeps (an atomic flag set before its last
//	    check, so either the waker sees it or the owner sees the
//	    completion: A5). That completion is one CQE, so a Wait that
//	    sleeps for more than one (a batch) would stay in the kernel after
//	    a Wake until ring requests complete, however slow: the read is
//	    linked to a pure timeout of zero (IORING_OP_TIMEOUT), which fires
//	    when the read completes, and a timeout that fires ends every wait
//	    in the kernel whatever its count (io_should_wake). A batch that
//	    nobody wakes is still one enter, with no timer (without
//	    IORING_OP_TIMEOUT, a Wait sleeps for one CQE). Close takes the
//	    read and its timeout back before the ring goes.
//	U12 A queue holds File.life shared from NewQueue to its Close, so
//	    File.Close waits for open queues (A6) and the slow path, which
//	    runs inside that hold, never enters the File again.
//	    RegisterBuffers registers caller buffers (with the zero buffer at
//	    index 0, R9); a request inside one is READ_FIXED or WRITE_FIXED.
//	U13 Merging, as R8 but owned by one goroutine: SQEs are filled at
//	    Submit and published only by the next enter, so a request that
//	    starts where the last filled data SQE's run ends, of the same
//	    kind, rides on it (at most mergeBytes and mergeIov buffers): the
//	    SQE is rewritten as a readv/writev of the whole run, never after
//	    it is published. Its result is shared in order; a request the
//	    transfer did not fully reach, and every request of an SQE that
//	    failed, finishes on the slow path alone, so each result stays
//	    exact. Options.NoMerge turns it off as it does R8.
//	U14 Flush failures stick (block B6): the first failed fdatasync, from
//	    Flush or a queue's flush, is kept, and every later flush fails
//	    with block.ErrFlushFailed wrapping it, without a new fdatasync,
//	    until the File is reopened. fdatasync calls are serialised (as
//	    QEMU serialises flushes): the kernel reports a write-back error
//	    to one of several concurrent calls on a descriptor, and the
//	    others would return success before the failure was recorded. Linux marks the pages whose
//	    write-back failed clean, so the next fdatasync would succeed with
//	    those writes lost. QEMU's file-posix sticks only without
//	    O_DIRECT; a File sticks either way, since a failed flush of a
//	    direct file may have lost the drive's write cache or the
//	    filesystem's metadata for our writes, which no later flush
//	    rewrites.
//	U15 A block device's size is what lseek finds (fstat says 0), asked
//	    again by Size and before refusing a request past the end, so a
//	    device grown under an open File is seen (QEMU's host_device reads
//	    its length each time); every byte lies inside it and none is
//	    fresh to the engine (Caps say Fixed: no reserve ahead). Zeroing
//	    with Allocate there is FALLOC_FL_WRITE_ZEROES where Open believes
//	    it works (U2), else refused: a block device's ZERO_RANGE is a
//	    WRITE ZEROES command that the kernel, where the device has none
//	    or refuses it (a loop device over tmpfs clears its limit then),
//	    turns into writes of zero pages without telling
//	    (blkdev_issue_zeroout without BLKDEV_ZERO_NOFALLBACK); QEMU's
//	    host_device refuses BDRV_REQ_NO_FALLBACK there too. The linked
//	    ZeroThenWritev (U4) takes WRITE_ZEROES. Truncate up to that size succeeds and
//	    changes nothing; past it, it fails, as QEMU's host_device
//	    ("Cannot grow device files"). A write or zeroing past the end
//	    fails with ENOSPC before reaching the kernel, and a zeroing that
//	    is not whole logical sectors fallocates the sectors inside and
//	    writes zeros at the edges: the kernel's EINVAL for either would
//	    read as a refused mode (U2).
//
// io_uring availability is probed once per process (ProbeRing, sync.Once,
// IORING_REGISTER_PROBE). With Backend Auto a File falls back to Threads
// when io_uring is unavailable (io_uring_disabled, seccomp, old kernel) and
// says why in BackendReason; nothing is logged.
package uring
