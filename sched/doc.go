// Package sched orders concurrent requests on plain byte and cluster ranges.
// It knows nothing of qcow2; the engine maps its requests onto it.
//
// Tracker is QEMU's tracked-request list (block/io.c): every in-flight
// request is registered by byte range, serialising requests (unaligned RMW,
// post-EOF zeroing, truncate, BDRV_REQ_SERIALISING) wait for overlapping
// requests and make overlapping requests wait for them, and a NoWait request
// fails with ErrBusy instead of waiting. MakeSerialising widens a running
// request and makes it serialising (file-posix's post-EOF zero write).
//
// ClusterLocks is QEMU's s->cluster_allocs with handle_dependencies
// (block/qcow2-cluster.c): an allocating write registers the guest clusters it
// is allocating, and another write touching any of them waits for that
// allocation only, then looks the cluster up again (QEMU handle_dependencies;
// 15 of 16 sequential 4 KiB writes into a new 64 KiB cluster wait).
//
// Invariants (tests and code cite them):
//
//	S1  At most one in-flight allocation per cluster: TryAcquire registers a
//	    range only if no cluster in it has an in-flight allocation, atomically
//	    with respect to other TryAcquire and Release calls.
//	S2  A serialising request never runs concurrently with an overlapping
//	    request, and a plain request never runs concurrently with an
//	    overlapping serialising one. Plain requests never wait for each other.
//	S3  NoWait never waits and never registers on conflict: Begin returns an
//	    error matching block.ErrBusy with no side effect except the Busy
//	    counter.
//	S4  No deadlock: a request only ever waits for a running request (one
//	    not itself waiting); requests that are waiting are skipped, because
//	    they rescan, and so wait for us, before they run (QEMU's
//	    waiting_for rule). With all scans under one mutex, waits form no
//	    cycle.
//	S5  No use after recycle: Req and Alloc objects are pooled. A Tracker
//	    waiter sleeps on a generation number that End bumps, so it wakes even
//	    if the Req is reused; a ClusterLocks blocker holds a pin, and an Alloc
//	    returns to the pool only once released and unpinned.
//	S6  The fast path allocates nothing: Begin/End without a conflict, and
//	    TryAcquire/Release and Conflict without one, reuse pooled objects
//	    (TestTracker_Allocs, TestClusterLocks_Allocs).
//
// Costs: the Tracker takes one mutex per Begin and End and scans the
// in-flight list only when a serialising request is involved. ClusterLocks
// shards by cluster group (16 clusters per group, 64 shards): an allocation
// within one group takes one shard lock; Conflict takes no lock at all when
// nothing is in flight.
package sched
