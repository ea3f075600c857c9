package qcow2

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/cache"
	"github.com/qring/qring/qcow2/format"
)

// Internal snapshots (QEMU's qcow2-snapshot.c). A snapshot is a copy of
// the active L1 table plus an entry in the snapshot table; the L2 tables
// and data clusters it references are shared with the active L1, each
// counted once more in its refcount. Sharing clears COPIED (Q6), so the
// write path copies a shared L2 table (ensureL2Locked) and a shared data
// cluster (allocWrite with cowOld: the old cluster's data, never the
// zero skip) before it changes them.
//
// Each operation flushes first and orders its steps so that a crash
// leaves at worst leaked clusters: references are counted durably
// before they are published (Q1, Q4), and a reference is durably gone
// before its refcount drops (Q3). Like QEMU, which drains the device
// first, the operations run with no allocation in flight (lockIdle):
// one holds mu throughout, so none starts. None waits for the data gate
// under mu: CreateSnapshot pauses overwrites and syncs the gate before
// it takes mu (pauseOverwrites), and clusters whose last reference
// Apply or Delete drops are held until the gate passes (Q12).

// pauseOverwrites stops the in-place overwrite path until the returned
// function runs, and waits for the overwrites already in flight: an
// overwrite that found COPIED before CreateSnapshot cleared it and landed
// after would change the snapshot's cluster, and be lost to the active
// image if a later write copied the cluster first. The wait (a gate sync)
// happens before mu is taken: a queue's fast writes leave the gate only
// when their owner reaps them, and the owner may be waiting for mu
// (block A3). Overwrites that come meanwhile wait (pausedForSnapshot),
// then take the allocating path, which copies the now shared cluster.
//
// The wait is bounded (idleWait, ErrSnapshotBusy): a queue's owner that
// calls WriteAt with a request unreaped would otherwise wait for the
// snapshot, and the snapshot for the owner.
func (im *Image) pauseOverwrites() (resume func(), err error) {
	im.snapMu.Lock()
	ch := make(chan struct{})
	im.snapPause.Store(&ch)
	resume = func() {
		im.snapPause.Store(nil)
		close(ch)
		im.snapMu.Unlock()
	}
	if !im.gate.syncWithin(im.idleWaitOr()) {
		resume()
		return nil, ErrSnapshotBusy
	}
	return resume, nil
}

// idleWaitOr is how long lockIdle and pauseOverwrites wait: about a
// second (tests may set idleWait longer).
func (im *Image) idleWaitOr() time.Duration {
	if im.idleWait > 0 {
		return im.idleWait
	}
	return time.Second
}

// closeWait is how long Close waits for the writes in flight: QEMU's
// drain waits for ever; this wait ends, so that a device that never
// answers cannot hold Close for ever, but only long after a slow device
// (a disk under load, a network file system) answered a 2 MiB
// allocation run. It was idleWaitOr's second: such a write failed with
// ErrClosed and its clusters leaked, in an image Close reported closed
// cleanly (TestClose_WaitsForSlowAllocation).
const closeWait = 30 * time.Second

// closeWaitOr is how long Close waits for writers: closeWait, or
// idleWait when a test set it.
func (im *Image) closeWaitOr() time.Duration {
	if im.idleWait > 0 {
		return im.idleWait
	}
	return closeWait
}

// pausedForSnapshot is called by an overwrite inside the gate (token
// tok) once it found its cluster COPIED, before it writes: while
// CreateSnapshot pauses overwrites it leaves the gate, waits for the
// snapshot and reports true (the caller goes on to the allocating path,
// which copies the cluster if the snapshot now shares it). Writes that
// allocate are never paused.
func (im *Image) pausedForSnapshot(tok uint64) bool {
	p := im.snapPause.Load()
	if p == nil {
		return false
	}
	im.gate.exit(tok)
	<-*p
	return true
}

// ErrNoSnapshot: no snapshot has the given ID or name.
var ErrNoSnapshot = errors.New("qcow2: snapshot not found")

// ErrSnapshotBusy: allocating writes kept running during a snapshot operation.
var ErrSnapshotBusy = errors.New("qcow2: writes in flight, snapshot operation refused")

// lockIdle takes mu once no allocation is in flight (each registers
// under mu, so none starts while it is held), waiting up to about a
// second for those running to finish; on ErrSnapshotBusy mu is not held.
func (im *Image) lockIdle() error { return im.lockQuiet(false) }

// lockQuiet is lockIdle that, with frees, also waits until no discard or
// zeroing has old entries waiting to be freed (Image.freeing: pended
// under mu with the L2 change). Close needs it: a close between the
// change and the free leaks the clusters. Check and snapshots count
// pending frees instead, and must not wait for a discard that waits in
// the gate.
func (im *Image) lockQuiet(frees bool) error {
	deadline := time.Now().Add(im.idleWaitOr()) // by the clock: sleeps overshoot
	for {
		im.mu.Lock()
		if im.allocs.Metrics().InFlight == 0 && (!frees || len(im.freeing) == 0) {
			return nil
		}
		im.mu.Unlock()
		if time.Now().After(deadline) {
			return ErrSnapshotBusy
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Snapshots returns the internal snapshots, in table order.
func (im *Image) Snapshots() []format.Snapshot {
	im.mu.Lock()
	defer im.mu.Unlock()
	return append([]format.Snapshot(nil), im.snapshots...)
}

// publishedSnapshots is the snapshot list for lock-free readers (the
// overlap check of the overwrite path): the list from open until a
// snapshot operation publishes a new one.
func (im *Image) publishedSnapshots() []format.Snapshot {
	if p := im.snapsPub.Load(); p != nil {
		return *p
	}
	return im.snapshots
}

// findSnapshotLocked returns the index of the snapshot with ID s, else
// of the first named s (QEMU's find_snapshot_by_id_or_name), or -1.
func (im *Image) findSnapshotLocked(s string) int {
	for i, sn := range im.snapshots {
		if sn.ID == s {
			return i
		}
	}
	for i, sn := range im.snapshots {
		if sn.Name == s {
			return i
		}
	}
	return -1
}

// withSnapshot runs fn on the snapshot with ID or name s (its index and
// table entry) with mu held and no allocation in flight (lockIdle), once
// metadata may be changed: the shared preamble of the operations on an
// existing snapshot. mu is taken and released here only.
func (im *Image) withSnapshot(s string, fn func(i int, sn format.Snapshot) error) error {
	return im.withSnapshotFound(func() int { return im.findSnapshotLocked(s) }, fn)
}

// withSnapshotFound is withSnapshot on the snapshot find returns the
// index of (under mu), -1 for none.
func (im *Image) withSnapshotFound(find func() int, fn func(i int, sn format.Snapshot) error) error {
	if err := im.lockIdle(); err != nil {
		return err
	}
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return err
	}
	i := find()
	if i < 0 {
		return ErrNoSnapshot
	}
	return fn(i, im.snapshots[i])
}

// CreateSnapshot takes an internal snapshot named name of the current
// disk state (qemu-img snapshot -c) and returns its table entry.
func (im *Image) CreateSnapshot(name string) (format.Snapshot, error) {
	// Refused at once, without pausing anyone, where it would be below.
	switch st := im.state.Load(); {
	case st&stClosed != 0:
		return format.Snapshot{}, block.ErrClosed
	case st&stLost != 0:
		return format.Snapshot{}, im.lostErr
	case st&stNoWrite != 0:
		return format.Snapshot{}, ErrReadOnly
	}
	if err := im.refuseDataFile("internal snapshots"); err != nil { // DF6
		return format.Snapshot{}, err
	}
	// Not in a Shrink's window, which would record the old size with
	// the range past the new end half discarded (Q18).
	im.resizeMu.Lock()
	defer im.resizeMu.Unlock()
	resume, err := im.pauseOverwrites()
	if err != nil {
		return format.Snapshot{}, err
	}
	defer resume()
	if err := im.lockIdle(); err != nil {
		return format.Snapshot{}, err
	}
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return format.Snapshot{}, err
	}
	if len(im.snapshots) >= format.MaxSnapshots {
		return format.Snapshot{}, fmt.Errorf("%w: too many snapshots", ErrUnsupported)
	}
	if err := im.flushLocked(); err != nil {
		return format.Snapshot{}, err
	}
	g := &im.g
	cs := g.ClusterSize
	active := im.l1.Load().entries()
	n := uint64(len(active))
	now := time.Now()
	sn := format.Snapshot{
		L1Size: uint32(n),
		ID:     im.newSnapshotIDLocked(),
		Name:   name,
		// As qemu-img snapshot -c: no VM state, icount 0 (not -1: its
		// zeroed SnapshotInfo; qemu-img snapshot -l shows 0).
		ExtraData: format.SnapshotExtra(0, im.hdr.Size, 0),
		DiskSize:  im.hdr.Size,
		DateSec:   uint32(now.Unix()),
		DateNsec:  uint32(now.Nanosecond() / 1000 * 1000), // QEMU: microseconds
	}
	snaps := append(append([]format.Snapshot(nil), im.snapshots...), sn)
	// Refused before anything changes: a table that cannot be encoded
	// (a name too long) would be found only after the refcounts rose.
	if _, err := format.EncodeSnapshots(snaps); err != nil {
		return format.Snapshot{}, fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	// The snapshot's L1: a copy of the active one, in new clusters (none
	// for an empty L1, as in QEMU; the offset is then 0).
	nclusters := l1Clusters(n, cs)
	var off format.HostOff
	if nclusters > 0 {
		var err error
		if off, _, err = im.allocClustersLocked(nclusters); err != nil {
			return format.Snapshot{}, err
		}
		buf := block.AlignedBuf(int(nclusters*cs), im.memAlign)
		for i, e := range active {
			format.PutL1(buf, uint64(i), format.MakeL1(e.Offset(), false))
		}
		if err := im.writeTable(buf, n*format.TableEntrySize, off); err != nil {
			im.freeClustersLocked(off, nclusters)
			return format.Snapshot{}, err
		}
	}
	// Count every L2 table and data cluster once more and clear COPIED
	// (refcounts first: the L2 cache depends on the refcount cache).
	if err := im.adjustRefsLocked(active, 1); err != nil {
		if !undoableWalkErr(err) { // else undone
			// Stopped half way: the tables counted so far are counted
			// twice under L1 entries that still carry COPIED. Set the
			// flags by the counts (best effort: a failure leaves only
			// flags out of step, as a crash here would), before any
			// flush writes the raised counts.
			im.copiedByCountsLocked()
		}
		// Nothing names the copy, whatever the failure (a failed
		// free leaves it leaked).
		if nclusters > 0 {
			im.freeClustersLocked(off, nclusters)
		}
		return format.Snapshot{}, err
	}
	l1 := im.l1.Load()
	for i, e := range active {
		if e.Offset() != 0 {
			l1.store(uint64(i), format.MakeL1(e.Offset(), false))
		}
	}
	// The L1 without COPIED goes to the media before the flush that
	// makes the increments durable: if that flush fails, the media must
	// not keep COPIED on tables now counted twice (a retried flush
	// writes only the caches), while a flag lost only costs a copy.
	if err := im.writeActiveL1Locked(false); err != nil {
		// Nothing made the increments durable yet: taken back, the
		// image is as it was (and keeps its writes), whatever part of
		// the L1 reached the media (the flags are set again by the
		// counts). Else a later flush would write them under an L1
		// that may still carry COPIED.
		im.freeClustersLocked(off, nclusters)
		return format.Snapshot{}, im.undoIncrementsLocked(active, -1, err)
	}
	if err := im.flushLocked(); err != nil {
		// The same undo: whatever part of the raised counts reached
		// the media is a leak until a flush writes the lowered ones,
		// and the flags are set (or owed) only after that flush. No
		// table names the snapshot's L1 yet.
		im.freeClustersLocked(off, nclusters)
		return format.Snapshot{}, im.undoIncrementsLocked(active, -1, err)
	}
	sn.L1TableOffset = off
	snaps[len(snaps)-1] = sn
	if err := im.writeSnapshotTableLocked(snaps); err != nil {
		return format.Snapshot{}, err
	}
	return sn, nil
}

// newSnapshotIDLocked is QEMU's find_new_snapshot_id: one more than the
// largest ID, each read as C's strtoul reads it (strtoul).
func (im *Image) newSnapshotIDLocked() string {
	m := uint64(0)
	for _, s := range im.snapshots {
		if v := strtoul(s.ID); v > m {
			m = v
		}
	}
	return strconv.FormatUint(m+1, 10) // wraps as QEMU's unsigned long
}

// strtoul is C's strtoul(s, NULL, 10) on a 64-bit host: leading white
// space, an optional sign (a minus negates, modulo 2^64), the digits up
// to the first other byte; 0 without digits, the maximum on overflow.
func strtoul(s string) uint64 {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] >= '\t' && s[i] <= '\r') {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	var v uint64
	digits := false
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		digits = true
		d := uint64(s[i] - '0')
		if v > (math.MaxUint64-d)/10 {
			return math.MaxUint64 // ERANGE: no negation either
		}
		v = v*10 + d
	}
	if !digits {
		return 0
	}
	if neg {
		v = -v
	}
	return v
}

// ApplySnapshot reverts the disk to the snapshot with ID or name s
// (qemu-img snapshot -a). The snapshot stays. A snapshot of another
// disk size is applied as QEMU applies it: the image is first resized to
// the snapshot's size (Truncate or Shrink, durable on its own: a crash
// after it leaves the resized image with its old contents), then its
// tables are switched.
func (im *Image) ApplySnapshot(s string) error {
	im.resizeMu.Lock() // it sets the size too (Q18)
	defer im.resizeMu.Unlock()
	var size uint64
	resize := false
	if err := im.withSnapshot(s, func(_ int, sn format.Snapshot) error {
		// Without a recorded size (extra data shorter than 16 bytes)
		// the snapshot is of the current size, as QEMU reads it; a
		// recorded 0 is a size like any other.
		size = sn.DiskSize
		if !sn.HasDiskSize() || size == im.hdr.Size {
			return nil
		}
		resize = true
		// Its tables are checked before the resize, which a refusal
		// found after it would leave behind (a refcount overflow
		// still can, as in QEMU).
		snl1, err := im.readL1Locked(sn.L1TableOffset, sn.L1Size)
		if err != nil {
			return err
		}
		return im.checkSnapshotL2s(snl1)
	}); err != nil {
		return err
	}
	if resize && size != im.vsize.Load() {
		if err := checkSectorSize(int64(size)); err != nil {
			return err
		}
		if err := im.resize(int64(size)); err != nil {
			return fmt.Errorf("qcow2: resizing to the snapshot's disk size %d: %w", size, err)
		}
	}
	return im.withSnapshot(s, func(_ int, sn format.Snapshot) error {
		return im.applySnapshotLocked(sn)
	})
}

// applySnapshotLocked is ApplySnapshot's work, under mu with no
// allocation in flight.
func (im *Image) applySnapshotLocked(sn format.Snapshot) error {
	if sn.HasDiskSize() && sn.DiskSize != im.hdr.Size {
		return fmt.Errorf("%w: applying a snapshot of another disk size", ErrUnsupported)
	}
	snl1, err := im.readL1Locked(sn.L1TableOffset, sn.L1Size)
	if err != nil {
		return err
	}
	if err := im.checkSnapshotL2s(snl1); err != nil {
		return err
	}
	if err := im.flushLocked(); err != nil {
		return err
	}
	if uint64(sn.L1Size) > im.l1.Load().size() {
		if err := im.growL1(uint64(sn.L1Size)); err != nil {
			return err
		}
	}
	// The snapshot's tables become active: the overlap checks let their
	// write-back through (their COPIED flags change below).
	for _, e := range snl1 {
		if e.Offset() != 0 {
			im.meta.set(im.g.HostCluster(e.Offset()), metaL2)
		}
	}
	// Q1: the new references are counted durably before the active L1
	// points at them.
	if err := im.adjustRefsLocked(snl1, 1); err != nil {
		return err
	}
	if err := im.flushLocked(); err != nil {
		return err
	}
	l1 := im.l1.Load()
	old := l1.entries()
	for k := range l1.size() {
		e := format.L1Entry(0)
		if k < uint64(len(snl1)) && snl1[k].Offset() != 0 {
			e = format.MakeL1(snl1[k].Offset(), false)
		}
		l1.store(k, e)
	}
	// Q22: every guest byte may change.
	im.markDirty(0, int64(im.hdr.Size))
	if err := im.writeActiveL1Locked(true); err != nil {
		return err
	}
	if err := im.dev.Flush(); err != nil {
		im.loseWritesLocked(err) // the media may name the old tables (Q4)
		return err
	}
	// Q3: the L1 no longer points at the old tables, durably; requests
	// that found the old entries may still be in the data gate, so
	// clusters that fall to 0 are held until it passes (adjustRefLocked,
	// Q12).
	isNew := make(map[format.HostOff]bool, len(snl1))
	for _, e := range snl1 {
		isNew[e.Offset()] = true
	}
	for _, e := range old {
		if e.Offset() != 0 && !isNew[e.Offset()] {
			im.meta.del(im.g.HostCluster(e.Offset()))
		}
	}
	if err := im.adjustRefsLocked(old, -1); err != nil {
		return err
	}
	return im.fixCopiedLocked()
}

// DeleteSnapshot removes the snapshot with ID or name s (qemu-img
// snapshot -d) and frees the clusters only it referenced.
func (im *Image) DeleteSnapshot(s string) error {
	// Not inside an ApplySnapshot, which lets mu go between its check,
	// its resize and its switch of tables: deleting its snapshot there
	// would leave the image resized and the apply refused.
	im.resizeMu.Lock()
	defer im.resizeMu.Unlock()
	return im.withSnapshot(s, im.deleteSnapshotLocked)
}

// DeleteSnapshotNamed removes the first snapshot named name, matching
// the name only, as qemu-img snapshot -d does (DeleteSnapshot takes an
// ID first: in a table where another snapshot's ID is that name, it
// would delete that one).
func (im *Image) DeleteSnapshotNamed(name string) error {
	im.resizeMu.Lock()
	defer im.resizeMu.Unlock()
	return im.withSnapshotFound(func() int {
		for i, sn := range im.snapshots {
			if sn.Name == name {
				return i
			}
		}
		return -1
	}, im.deleteSnapshotLocked)
}

// deleteSnapshotLocked is DeleteSnapshot's work on snapshot i, under mu
// with no allocation in flight.
func (im *Image) deleteSnapshotLocked(i int, sn format.Snapshot) error {
	if err := im.flushLocked(); err != nil {
		return err
	}
	snl1, err := im.readL1Locked(sn.L1TableOffset, sn.L1Size)
	if err != nil {
		return err
	}
	snaps := append(append([]format.Snapshot(nil), im.snapshots[:i]...), im.snapshots[i+1:]...)
	// Q3: the snapshot is durably gone before its references drop.
	if err := im.writeSnapshotTableLocked(snaps); err != nil {
		// QEMU's qcow2_snapshot_delete names this step.
		return &StepError{Step: "Failed to remove snapshot from snapshot list", Err: err}
	}
	// A read still in the data gate may have found a cluster that only
	// the snapshot keeps now (the active tree replaced it since): one
	// that falls to 0 is held until the gate passes (adjustRefLocked,
	// Q12).
	if err := im.adjustRefsLocked(snl1, -1); err != nil {
		return err
	}
	// Exactly the clusters the L1 covers, as Check counts them: none
	// for an empty one, whatever its offset says.
	if nc := l1Clusters(uint64(sn.L1Size), im.g.ClusterSize); nc > 0 {
		if err := im.freeClustersLocked(sn.L1TableOffset, nc); err != nil {
			return err
		}
	}
	return im.fixCopiedLocked()
}

// l1Clusters is the number of clusters an L1 table of n entries covers
// (0 for an empty one).
func l1Clusters(n, cs uint64) uint64 {
	return (n*format.TableEntrySize + cs - 1) / cs
}

// readL1Locked reads an L1 table of n entries at off.
func (im *Image) readL1Locked(off format.HostOff, n uint32) ([]format.L1Entry, error) {
	if n == 0 {
		return nil, nil
	}
	cs := im.g.ClusterSize
	b := block.AlignedBuf(int(l1Clusters(uint64(n), cs)*cs), im.memAlign)
	if err := im.readAtLocked(b, off); err != nil {
		return nil, fmt.Errorf("reading the snapshot L1 table: %w", err)
	}
	out := make([]format.L1Entry, n)
	for i := range out {
		out[i] = format.L1At(b, uint64(i))
		if err := out[i].Validate(&im.g); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// checkSnapshotL2s refuses, before anything changes, a snapshot whose L1
// names an "L2 table" that is fixed metadata, a refcount block, the
// bitmap directory, or past the end of the file (QEMU's overlap check on applying): made active,
// the engine would write such a table back over what is really there.
func (im *Image) checkSnapshotL2s(snl1 []format.L1Entry) error {
	cs := im.g.ClusterSize
	for i, e := range snl1 {
		off := e.Offset()
		if off == 0 {
			continue
		}
		if uint64(off)+cs > im.space.hwm.Load() {
			return corruptf("snapshot_l1_entry", uint64(e), "L2 table %d lies past the end of the file", i)
		}
		if what := im.inactiveL2Overlap(off, cs); what != "" {
			return corruptf("snapshot_l1_entry", uint64(e), "L2 table %d overlaps the %s", i, what)
		}
		// The snapshot references it, so it cannot be free: a free
		// cluster may be anything next (a table moved away from it,
		// say; found by review).
		if rc, err := im.refcount(im.g.HostCluster(off)); err != nil || rc == 0 {
			return corruptf("snapshot_l1_entry", uint64(e), "L2 table %d lies in a free cluster", i)
		}
	}
	// Their entries are read through before any count changes: one
	// that is not valid refuses the apply with the image as it was (the
	// count would stop half way, its raised counts leaked).
	return im.walkRefTree(snl1, 0, func(uint64) error { return nil })
}

// writeActiveL1Locked writes the whole active L1 table from memory. Its
// callers changed the entries first: if the write fails, the media may
// hold the old ones, the new ones or a mix. With lose (the entries name
// other tables, or lost COPIED) the image then refuses writes until it
// is reopened (Q4), so no repair frees a table the media may still
// name.
func (im *Image) writeActiveL1Locked(lose bool) error {
	l1 := im.l1.Load()
	cs := im.g.ClusterSize
	n := (l1.size()*format.TableEntrySize + cs - 1) / cs * cs
	buf := block.AlignedBuf(int(max(n, cs)), im.memAlign)
	for i, e := range l1.entries() {
		format.PutL1(buf, uint64(i), e)
	}
	a := uint64(im.metaAlign)
	wlen := min((l1.size()*format.TableEntrySize+a-1)/a*a, uint64(len(buf)))
	if err := im.writeMeta(buf[:wlen], im.hdr.L1TableOffset); err != nil {
		if lose {
			im.loseWritesLocked(err)
		}
		return err
	}
	return nil
}

// adjustRefsLocked adds addend (+1 or -1) to the refcount of every L2
// table in l1 and of every cluster those tables reference (QEMU's
// qcow2_update_snapshot_refcount). With addend > 0 it also clears COPIED
// in the L2 entries, after the increments (the L2 cache depends on the
// refcount cache); with addend < 0 it changes no entry (the tables may
// be on their way out: fixCopiedLocked sets COPIED afterwards).
//
// An increment that overflows a refcount (narrow refcount_bits, a
// compressed cluster many entries share) fails with ErrRefcountOverflow
// after undoing the increments made before it and setting back the
// COPIED flags it cleared: the image is as it was, not corrupt.
func (im *Image) adjustRefsLocked(l1 []format.L1Entry, addend int64) error {
	done := 0
	err := im.walkRefsLocked(l1, addend, -1, &done)
	if err == nil || addend < 0 || !undoableWalkErr(err) {
		return err
	}
	return im.undoIncrementsLocked(l1, done, err)
}

// undoableWalkErr reports whether err stopped a walk of
// adjustRefsLocked(l1, 1) at a point it can be taken back exactly from:
// an overflowing increment or an entry it cannot count.
func undoableWalkErr(err error) bool {
	var we *walkEntryError
	return errors.Is(err, ErrRefcountOverflow) || errors.As(err, &we)
}

// undoIncrementsLocked takes back the first done increments (done < 0:
// all) of an adjustRefsLocked(l1, 1) whose result is not to be kept
// because of cause, before any flush made them durable, and sets COPIED
// by the counts again. It returns cause, or why the image could not be
// put back (marked corrupt when the counts could not).
func (im *Image) undoIncrementsLocked(l1 []format.L1Entry, done int, cause error) error {
	if done < 0 {
		done = math.MaxInt // the same walk over the same tables
	}
	undone := 0
	if uerr := im.walkRefsLocked(l1, -1, done, &undone); uerr != nil {
		return im.markCorrupt(fmt.Errorf("undoing refcount increments after %v: %w", cause, uerr))
	}
	// COPIED back by the counts before anything is flushed: the counts
	// in memory are the ones on disk again (but for blocks written
	// back during the walk), so the flush writes each slice with its
	// flags back, after the counts under it (the L2 cache depends on
	// the refcount cache). Flushing first (fixCopiedLocked) wrote the
	// slices the walk had cleared over counts of 1: a crash then left
	// OFLAG_COPIED errors (found by the review of the undo).
	if uerr := im.copiedByCountsLocked(); uerr != nil {
		return uerr
	}
	if uerr := im.flushLocked(); uerr != nil {
		return uerr
	}
	return cause
}

// walkRefsLocked is adjustRefsLocked's walk: it stops after limit
// refcount changes (limit < 0: none), counting them in *n. Undoing
// (addend < 0 with a limit) changes no entry and frees nothing: it takes
// back increments of this walk.
func (im *Image) walkRefsLocked(l1 []format.L1Entry, addend int64, limit int, n *int) error {
	adjust := func(c uint64) error {
		if *n == limit {
			return errWalkDone
		}
		var err error
		if limit >= 0 {
			err = im.updateRefcountLocked(c, addend)
		} else {
			err = im.adjustRefLocked(c, addend)
		}
		if err == nil {
			*n++
		}
		return err
	}
	err := im.walkRefTree(l1, addend, adjust)
	if err == errWalkDone {
		return nil
	}
	var we *walkEntryError
	if limit >= 0 && *n == limit && errors.As(err, &we) {
		// Undoing a walk that stopped at this entry: every
		// change before it is taken back.
		return nil
	}
	return err
}

// errWalkDone ends walkRefsLocked at its limit.
var errWalkDone = errors.New("qcow2: walk done")

// walkEntryError is walkRefTree's refusal of an L2 entry it cannot
// count, found before any change for that entry: a walk that stops there
// can be taken back exactly (adjustRefsLocked), as one that overflows.
type walkEntryError struct{ err error }

func (e *walkEntryError) Error() string { return e.err.Error() }
func (e *walkEntryError) Unwrap() error { return e.err }

// walkRefTree calls adjust for every L2 table of l1 and every cluster its
// entries reference, in a fixed order; with addend > 0 it clears COPIED
// in each slice after its entries' increments (Q1).
func (im *Image) walkRefTree(l1 []format.L1Entry, addend int64, adjust func(c uint64) error) error {
	g := &im.g
	entries := make([]format.L2Entry, im.sliceSize/im.g.L2EntrySize)
	for _, le := range l1 {
		l2off := le.Offset()
		if l2off == 0 {
			continue
		}
		for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
			t, err := im.pinL2Slice(int64(l2off)+int64(s), entries)
			if err != nil {
				return err
			}
			im.l2c.Put(t)
			copied := false
			for _, e := range entries {
				// As QEMU's qcow2_update_snapshot_refcount takes it:
				// reserved bits and a compressed entry's COPIED are
				// ignored (Q20; the COPIED flag is cleared below
				// with the others, the reserved bits stay).
				re, err := im.readableEntry(e)
				if err != nil {
					return &walkEntryError{corruptf("l2_entry", uint64(e), "invalid L2 entry in table %#x", uint64(l2off))}
				}
				if err := im.adjustEntryLocked(re, adjust); err != nil {
					return err
				}
				copied = copied || e.Copied()
			}
			if addend > 0 && copied {
				if err := im.l2c.SetDependency(im.rbc); err != nil { // Q1
					return err
				}
				if err := im.clearCopiedLocked(int64(l2off) + int64(s)); err != nil {
					return err
				}
			}
		}
		if err := adjust(g.HostCluster(l2off)); err != nil {
			return err
		}
	}
	return nil
}

// adjustEntryLocked calls adjust for the clusters of one L2 entry.
func (im *Image) adjustEntryLocked(e format.L2Entry, adjust func(c uint64) error) error {
	g := &im.g
	switch e.Type() {
	case format.ClusterNormal, format.ClusterZeroAlloc:
		return adjust(g.HostCluster(e.Offset()))
	case format.ClusterCompressed:
		d := e.DecodeCompressed(g)
		for c := g.HostCluster(d.Off); c <= g.HostCluster(d.Off+format.HostOff(d.Size)-1); c++ {
			if err := adjust(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// adjustRefLocked adds addend to host cluster c's refcount. A reference
// dropped is one the L1 or the snapshot table no longer holds, durably
// (Q3), but a lookup that started before may still use the cluster: one
// that falls to 0 is held until the data gate has passed (Q12, held.go),
// so a snapshot operation never waits for the gate under mu (where a
// queue's owner that calls the image could hold it up: block A3).
func (im *Image) adjustRefLocked(c uint64, addend int64) error {
	if addend < 0 {
		// Removals durable already (Q3), so Q13 needs no more flush.
		return im.freeHeldLocked(c, false)
	}
	return im.updateRefcountLocked(c, addend)
}

// pinL2Slice pins the L2 slice at host offset off and reads its entries
// into entries (one slice's worth) under the table's lock. The caller
// Puts the table.
func (im *Image) pinL2Slice(off int64, entries []format.L2Entry) (*cache.Table, error) {
	t, err := im.l2c.Get(off)
	if err != nil {
		return nil, err
	}
	t.Lock()
	for k := range entries {
		entries[k] = im.g.L2At(t.Data, uint64(k))
	}
	t.Unlock()
	return t, nil
}

// clearCopiedLocked clears COPIED in every entry of the L2 slice at off.
func (im *Image) clearCopiedLocked(off int64) error {
	t, err := im.l2c.Get(off)
	if err != nil {
		return err
	}
	t.Lock()
	for k := range im.sliceSize / im.g.L2EntrySize {
		if e := im.g.L2At(t.Data, k); e.Copied() {
			im.g.PutL2(t.Data, k, e&^format.OflagCopied)
		}
	}
	t.Unlock()
	im.l2c.MarkDirty(t)
	im.l2c.Put(t)
	return nil
}

// fixCopiedLocked flushes the refcount changes made so far and then sets
// COPIED in the active L1 and L2 entries exactly where the refcount is 1
// (Q6), as QEMU's qcow2_update_snapshot_refcount with addend 0 does.
//
// Until one succeeds the flags are owed (Image.copiedOwed): a Flush or
// Close that finds no allocation in flight sets them after its own
// flush, so a one-off failure here does not leave them out of step on
// the media for good.
func (im *Image) fixCopiedLocked() error {
	im.copiedOwed = true
	if err := im.flushLocked(); err != nil {
		return err
	}
	return im.copiedByCountsLocked()
}

// settleCopiedLocked sets the COPIED flags a failed fixCopiedLocked or
// copiedByCountsLocked still owes, right after a successful flush (the
// counts are durable) and only with no allocation in flight: one may
// have linked an L2 table in the L1 in memory before writing the table,
// and copiedByCountsLocked writes the whole L1. Not after lost writes
// either (Q4, Q16): the L1 in memory may name what never landed.
func (im *Image) settleCopiedLocked() error {
	if !im.copiedOwed || im.writesLost || im.allocs.Metrics().InFlight != 0 {
		return nil
	}
	return im.copiedByCountsLocked()
}

// copiedByCountsLocked is fixCopiedLocked without its first flush, for
// counts that only went up since the last one (a CreateSnapshot stopped
// half way): every flag it sets is on a cluster whose count was 1 on
// disk too, and the flags it clears must not wait for a flush that
// would write the raised counts under them.
func (im *Image) copiedByCountsLocked() error {
	im.copiedOwed = true // until the flags below are durable
	g := &im.g
	l1 := im.l1.Load()
	l1changed := false
	for i := range l1.size() {
		le := l1.load(i)
		l2off := le.Offset()
		if l2off == 0 {
			continue
		}
		for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
			want := make([]format.L2Entry, im.sliceSize/im.g.L2EntrySize)
			t, err := im.pinL2Slice(int64(l2off)+int64(s), want)
			if err != nil {
				return err
			}
			changed := false
			for k, e := range want {
				ty := e.Type()
				if ty == format.ClusterCompressed && e.Copied() {
					// Never set on a compressed entry: QEMU's
					// pass clears it (Q20).
					want[k], changed = e&^format.OflagCopied, true
					continue
				}
				if ty != format.ClusterNormal && ty != format.ClusterZeroAlloc {
					continue
				}
				rc, err := im.refcount(g.HostCluster(e.Offset()))
				if err != nil {
					im.l2c.Put(t)
					return err
				}
				ne := e &^ format.OflagCopied
				if rc == 1 {
					ne |= format.OflagCopied
				}
				if ne != e {
					want[k], changed = ne, true
				}
			}
			if changed {
				t.Lock()
				for k, e := range want {
					im.g.PutL2(t.Data, uint64(k), e)
				}
				t.Unlock()
				im.l2c.MarkDirty(t)
			}
			im.l2c.Put(t)
		}
		rc, err := im.refcount(g.HostCluster(l2off))
		if err != nil {
			return err
		}
		if ne := format.MakeL1(l2off, rc == 1); ne != le {
			l1.store(i, ne)
			l1changed = true
		}
	}
	if l1changed || im.l1FlagsStale {
		// Only COPIED flags set: a media without them costs a copy
		// on the next write, so a failure need not refuse writes. It
		// leaves the flags in memory ahead of the media, which the
		// next call must write even if it changes none
		// (l1FlagsStale).
		im.l1FlagsStale = true
		if err := im.writeActiveL1Locked(false); err != nil {
			return err
		}
		im.l1FlagsStale = false
	}
	if err := im.flushLocked(); err != nil {
		return err
	}
	im.copiedOwed = false
	return nil
}

// writeSnapshotTableLocked writes snaps as the new snapshot table into
// new clusters, makes it durable, points the header at it, makes that
// durable, and only then frees the old table (Q4, Q3).
func (im *Image) writeSnapshotTableLocked(snaps []format.Snapshot) error {
	b, err := format.EncodeSnapshots(snaps)
	if err != nil {
		return err
	}
	cs := im.g.ClusterSize
	var off format.HostOff
	var nclusters uint64
	if len(b) > 0 {
		nclusters = (uint64(len(b)) + cs - 1) / cs
		if off, _, err = im.allocClustersLocked(nclusters); err != nil {
			return err
		}
		buf := block.AlignedBuf(int(nclusters*cs), im.memAlign)
		copy(buf, b)
		// Up to the last entry's name, as QEMU (its snapshots_size):
		// not the zeros that pad the entry to 8 bytes, which nothing
		// reads.
		need, _ := format.SnapshotTableNeed(b, uint32(len(snaps)))
		if err := im.writeTable(buf, need, off); err != nil {
			im.freeClustersLocked(off, nclusters)
			return err
		}
		if err := im.flushLocked(); err != nil {
			return err
		}
	}
	oldOff, oldN := im.hdr.SnapshotsOffset, im.hdr.NbSnapshots
	oldLen, err := im.snapshotTableLenLocked()
	if err != nil {
		return err
	}
	im.hdr.SnapshotsOffset, im.hdr.NbSnapshots = off, uint32(len(snaps))
	if err := im.writeHeader(); err != nil {
		// The media may name either table (Q4).
		im.hdr.SnapshotsOffset, im.hdr.NbSnapshots = oldOff, oldN
		im.loseWritesLocked(err)
		return err
	}
	im.snapshots = snaps
	im.snapsPub.Store(&snaps)
	im.snapOff.Store(uint64(off))
	im.snapLen.Store(uint64(len(b)))
	if err := im.dev.Flush(); err != nil {
		im.loseWritesLocked(err) // as above
		return err
	}
	if oldN > 0 && oldLen > 0 {
		return im.freeClustersLocked(oldOff, (oldLen+cs-1)/cs)
	}
	return nil
}

// snapshotTableLenLocked is the current snapshot table's length in bytes.
func (im *Image) snapshotTableLenLocked() (uint64, error) {
	if im.hdr.NbSnapshots == 0 {
		return 0, nil
	}
	b, err := format.EncodeSnapshots(im.snapshots)
	if err != nil {
		return 0, err
	}
	return uint64(len(b)), nil
}

// LoadSnapshotTemp makes a read-only image read as its internal
// snapshot with ID id and name name (an empty one matches any), as
// QEMU's bdrv_snapshot_load_tmp (qemu-img convert -l, measure -l): the
// snapshot's L1 table replaces the active one in memory, for as long as
// the image stays open; the disk size stays the image's, as in QEMU (a
// snapshot's clusters past it are not seen, and what lies past its L1
// table reads as unallocated). Nothing is written.
func (im *Image) LoadSnapshotTemp(id, name string) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if !im.ro || !im.opts.ReadOnly {
		// Opened read-only, not only read-only for now: a damaged
		// image opened for repair is read-only until a repair, which
		// would take the snapshot's L1 for the active one.
		return fmt.Errorf("%w: loading a snapshot temporarily needs a read-only image", ErrUnsupported)
	}
	if id == "" && name == "" {
		return ErrNoSnapshot
	}
	for _, sn := range im.snapshots {
		if (id != "" && sn.ID != id) || (name != "" && sn.Name != name) {
			continue
		}
		snl1, err := im.readL1Locked(sn.L1TableOffset, sn.L1Size)
		if err != nil {
			return err
		}
		t := newL1Table(uint64(len(snl1)))
		for k, e := range snl1 {
			t.store(uint64(k), format.MakeL1(e.Offset(), false))
		}
		im.l1.Store(t)
		im.snapLoaded = true
		return nil
	}
	return ErrNoSnapshot
}
