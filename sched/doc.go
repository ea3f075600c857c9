// Package sched orders concurrent allocations on cluster ranges. It knows
// nothing of qcow2; the engine maps its requests onto it.
//
// ClusterLocks is QEMU's s->cluster_allocs with handle_dependencies
// (block/qcow2-cluster.c): an allocating write registers the guest clusters it
// is allocating, and another write touching any of them waits for that
// allocation only, then looks the cluster up again (QEMU handle_dependencies;
// 15 of 16 sequential 4 KiB writes into a new 64 KiB cluster wait). The
// registration carries its owner's state of the allocation, so a write that
// finds the cluster busy needs no second map to learn what the allocation
// is doing.
//
// Invariants (tests and code cite them; the numbers missing between S1
// and S5 named the rules of a byte-range request tracker that had no user
// and was removed):
//
//	S1  At most one in-flight allocation per cluster: TryAcquire registers a
//	    range only if no cluster in it has an in-flight allocation, atomically
//	    with respect to other TryAcquire and Release calls.
//	S5  No use after recycle: Alloc objects are pooled. A blocker holds a
//	    pin, and an Alloc returns to the pool (without its state) only once
//	    released and unpinned, so Wait and State never observe a later
//	    incarnation.
//	S6  The fast path allocates nothing: TryAcquire/Release and Conflict
//	    without a conflict reuse pooled objects (TestClusterLocks_Allocs).
//	S7  One record per allocation: the state an owner attaches with
//	    SetState is what every blocker of that registration returns from
//	    State, until the Alloc is recycled; ClusterLocks never reads it.
//
// Costs: ClusterLocks shards by cluster group (16 clusters per group, 64
// shards): an allocation within one group takes one shard lock; Conflict
// takes no lock at all when nothing is in flight. Multi-shard holders take
// the shard locks in ascending order, so they never deadlock.
package sched
