// Package cache is the qcow2 metadata table cache: L2 tables (or slices) and
// refcount blocks, modelled on QEMU's Qcow2Cache (block/qcow2-cache.c).
//
// # Layout
//
// Every table lives in exactly one of three places:
//
//	owned map     tables that are pinned (Get without Put), dirty, loading,
//	              or being written back. Owned by the cache; never evicted.
//	pending map   clean tables handed to ristretto whose Set may still sit in
//	              ristretto's asynchronous set buffer (see C2).
//	ristretto     clean, unpinned tables (cost = TableSize). Ristretto may
//	              drop, reject or evict them at any time; that only loses a
//	              copy equal to what is on the device.
//
// Lookups go owned → pending → ristretto → device.
//
// # Invariants (code cites them as C1..C10)
//
//	C1  Owned precedence. A table in the owned map is always the one served;
//	    pending and ristretto are consulted only on an owned miss, and an
//	    object found there is served only if it is alive (its epoch equals
//	    the cache's; Discard, Invalidate and the cleaner kill objects by
//	    epoch instead of deleting them from ristretto, whose Del blocks).
//	C2  Uniqueness. At most one live *Table per offset exists across the
//	    owned map, the pending map, ristretto's store and ristretto's set
//	    buffer. A new object is created only after all of them missed: every
//	    successful Set records the object in the pending map, and an entry
//	    leaves the pending map only after ristretto.Wait proved its Set was
//	    processed (admitted into the store, or rejected). Without this, a
//	    reload racing with a still-buffered Set of an older copy could later
//	    let the older copy be admitted and served stale.
//	C3  Only clean, unpinned, alive tables whose content equals the device
//	    leave the owned map. Dirty, pinned, loading, in-flight, or
//	    GetEmpty-zeroed-but-never-dirtied tables stay owned (or are dropped),
//	    so a dropped, rejected or evicted Set never loses state.
//	C4  Write-back writes a snapshot. The table's generation is recorded
//	    under the cache lock, then its Data is copied under the table's own
//	    lock (Table.Lock), and the device write uses the copy. The table
//	    becomes clean only if its generation is unchanged when the write
//	    returns; a MarkDirty during the write keeps it dirty. The table stays
//	    pinned in the owned map while the write is in flight, so a concurrent
//	    Get returns the same object.
//	C5  Dependencies (QEMU qcow2_cache_entry_flush). After the snapshot and
//	    before the device write, pending dependencies are resolved: if c
//	    depends on a cache, that cache is flushed (written + device flush);
//	    else if DependsOnFlush was called, the device is flushed. Resolution
//	    is serialised per cache (depMu) and cleared only after it succeeded
//	    and only if no new dependency was registered meanwhile (depGen), so a
//	    concurrent write-back can never slip past an unfinished dependency
//	    flush. Snapshot-then-resolve means every modification in the
//	    snapshot was preceded by its SetDependency.
//	C6  Dirty bound. When more than max(capacity, 4) tables are dirty and
//	    unpinned, Get/GetEmpty first write back the oldest of them through
//	    the C4/C5 path (eviction honours dependencies: docs/qcow2-format.md,
//	    trap 7).
//	C7  Single flight. A missing table is inserted into the owned map in the
//	    loading state before the device read; concurrent getters pin it and
//	    wait on its ready channel, so there is one read per missing table.
//	C8  Ristretto callbacks (OnEvict, OnReject) only count and flip an atomic
//	    residency hint; they never take the cache lock or do I/O. The cache
//	    lock is held only around non-blocking ristretto calls (Get, Set);
//	    blocking ones (Wait, Del, Close) run without it.
//	C9  Lock order: Table.Lock → Cache.mu → ristretto internals. depMu is
//	    taken without Cache.mu held.
//	C10 The hit path (Get of a cached table + Put) allocates nothing: the
//	    residency hint lets Put skip re-Setting a table ristretto still holds.
//
// # Modifying tables
//
// A pin holder may read and modify Table.Data. A write-back (Write, Flush,
// eviction, a dependent cache's flush) copies Data under Table.Lock (C4). A
// caller that modifies Data while a write-back may run concurrently — that
// is, without its own lock that also covers Write/Flush — must hold
// Table.Lock while modifying, and must call MarkDirty after the change
// (MarkDirty may be called with Table.Lock held). No other cache method may
// be called while holding Table.Lock.
package cache
