package qcow2

// Found by a fourth review (Q4: a pointer write that succeeded, then its
// flush failed); each test failed on the code before its fix, and its
// comment describes that failure.

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
)

// dropThenFailFlush models a failed flush that did not keep a write
// (Q4: "a failed flush may have kept it or not"; Linux drops the dirty
// pages of a failed writeback and reports EIO at the next fsync): once
// armed, the first write into [lo, hi) reports success without reaching
// the media, and the next Flush fails.
type dropThenFailFlush struct {
	block.Device
	lo, hi    atomic.Int64
	armed     atomic.Bool
	failFlush atomic.Bool
	dropped   atomic.Int64
}

func (d *dropThenFailFlush) Writev(off int64, bufs [][]byte) error {
	if off < d.hi.Load() && d.lo.Load() < off+block.VecLen(bufs) && d.armed.CompareAndSwap(true, false) {
		d.dropped.Store(off)
		d.failFlush.Store(true)
		return nil
	}
	return d.Device.Writev(off, bufs)
}

func (d *dropThenFailFlush) Flush() error {
	if d.failFlush.CompareAndSwap(true, false) {
		return errordev.ErrInjectedEIO
	}
	return d.Device.Flush()
}

func openDrop(t *testing.T, co CreateOptions) (*memdev.Dev, *dropThenFailFlush, *Image) {
	t.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	d := &dropThenFailFlush{Device: mem}
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	return mem, d, im
}

func reopenR5(t *testing.T, mem *memdev.Dev) *Image {
	t.Helper()
	im2, err := OpenDevice(memdev.FromBytes(mem.Bytes(), memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	return im2
}

// ensureL2Locked's COW of a shared L2 table writes the L1 entry
// naming the copy, then flushes (Q3) before dropping the old table; a
// failed flush returns the error but neither refuses writes nor restores
// the entry. Memory names the copy, the media (the write dropped with
// the failed flush) the shared table: the next write of the same range
// links into the copy, is acknowledged and flushed, and reads the old
// data after a reopen.
func TestRegress_COWL1EntryFlushFailureKeepsAckedWrite(t *testing.T) {
	const cs = 64 << 10
	mem, d, im := openDrop(t, CreateOptions{Size: 1 << 30, ClusterSize: cs})
	defer im.Close()
	a := bytes.Repeat([]byte{0xaa}, cs)
	mustWrite(t, im, a, 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	h := im.Header()
	d.lo.Store(int64(h.L1TableOffset))
	d.hi.Store(int64(h.L1TableOffset) + 8)
	d.armed.Store(true)
	b := bytes.Repeat([]byte{0xbb}, cs)
	_, err := im.WriteAt(b, 0)
	t.Logf("first write (COW, flush fails): %v", err)
	_, err = im.WriteAt(b, 0)
	if err == nil {
		err = im.Flush()
	}
	if err != nil {
		if errors.Is(err, ErrWritesLost) {
			return // refused: fixed
		}
		t.Fatal(err)
	}
	im2 := reopenR5(t, mem)
	defer im2.Close()
	if got := readBack(t, im2, 0, cs); !bytes.Equal(got, b) {
		t.Fatalf("an acknowledged and flushed write reads %#x after reopen (dropped L1 write at %#x)", got[0], d.dropped.Load())
	}
}

// ensureRefblock writes the refcount table entry naming a new
// block, then flushes; a failed flush returns the error with memory
// naming the block, writes go on counting in it, and the media (the
// entry dropped with the failed flush) does not name it: after a crash
// the clusters of acknowledged, flushed writes have refcount 0.
func TestRegress_RefblockEntryFlushFailureIsClean(t *testing.T) {
	const cs = 512
	blocks := func(im *Image) int {
		n := 0
		for _, v := range im.reftable {
			if v != 0 {
				n++
			}
		}
		return n
	}
	data := bytes.Repeat([]byte{0x5a}, cs)
	_, _, im := openDrop(t, CreateOptions{Size: 64 << 20, ClusterSize: cs})
	k := -1
	for i := 0; i < 4096; i++ {
		b := blocks(im)
		mustWrite(t, im, data, int64(i)*cs)
		if blocks(im) > b {
			k = i
			break
		}
	}
	im.Close()
	if k < 0 {
		t.Fatal("no new refcount block")
	}
	mem, d, im := openDrop(t, CreateOptions{Size: 64 << 20, ClusterSize: cs})
	defer im.Close()
	for i := 0; i < k; i++ {
		mustWrite(t, im, data, int64(i)*cs)
	}
	h := im.Header()
	d.lo.Store(int64(h.RefcountTableOffset))
	d.hi.Store(int64(h.RefcountTableOffset) + int64(h.RefcountTableClusters)*cs)
	d.armed.Store(true)
	_, err := im.WriteAt(data, int64(k)*cs)
	t.Logf("write %d (refblock entry dropped, flush fails): %v", k, err)
	acked := 0
	for i := k; i < k+16; i++ {
		if _, err := im.WriteAt(data, int64(i)*cs); err != nil {
			if errors.Is(err, ErrWritesLost) {
				return // refused: fixed
			}
			t.Fatal(err)
		}
		acked++
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im2 := reopenR5(t, mem)
	defer im2.Close()
	mustNoCorruption(t, im2)
}

// ApplySnapshot writes the active L1 (now refusing writes if that
// write fails), then flushes; a failed flush returns the error without
// refusing writes. As in TestRegress_FailedApplySnapshotL1WriteThenRepair,
// a live Check repair then frees the old tables the media still names
// (the L1 write dropped with the failed flush), new allocations reuse
// them, and after a crash the image is corrupt.
func TestRegress_ApplySnapshotFlushFailureThenRepair(t *testing.T) {
	const cs = 64 << 10
	mem, d, im := openDrop(t, CreateOptions{Size: 1 << 30, ClusterSize: cs})
	defer im.Close()
	mustWrite(t, im, bytes.Repeat([]byte{0x10}, cs), 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, cs), 0) // COW: table A', data d1
	h := im.Header()
	d.lo.Store(int64(h.L1TableOffset))
	d.hi.Store(int64(h.L1TableOffset) + int64(h.L1Size)*8)
	d.armed.Store(true)
	err := im.ApplySnapshot("s")
	t.Logf("ApplySnapshot: %v", err)
	if err == nil {
		t.Skip("no failure")
	}
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	switch {
	case errors.Is(err, ErrReadOnly):
		return // refused: fixed
	case err != nil:
		t.Fatal(err)
	default:
		t.Logf("repair: %d leaks fixed: %v", r.LeaksFixed, head(r.Messages, 4))
	}
	junk := bytes.Repeat([]byte{0xff}, cs)
	for k := int64(0); k < 4; k++ {
		if _, err := im.WriteAt(junk, 600<<20+k*cs); err != nil && !errors.Is(err, ErrWritesLost) {
			t.Fatal(err)
		}
	}
	if err := im.Flush(); err != nil && !errors.Is(err, ErrWritesLost) {
		t.Fatal(err)
	}
	im2 := reopenR5(t, mem)
	defer im2.Close()
	mustNoCorruption(t, im2)
}

// SetVersion(2)'s header write lands, then fails: the header is
// restored in memory (version 3) and writes go on, with zero clusters
// (a version 3 feature) allowed; the media says version 2. After a
// reopen the image has zero clusters in a version 2 image.
func TestRegress_DowngradeHeaderLandedRefusesZeroClusters(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 16 << 20, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	d := &landsThenFailsHdr{Device: mem}
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mustWrite(t, im, bytes.Repeat([]byte{0x77}, cs), 0)
	d.land.Store(true)
	err = im.SetVersion(2)
	t.Logf("SetVersion(2): %v; in memory: version %d", err, im.Header().Version)
	if err == nil {
		t.Skip("no failure")
	}
	werr := im.WriteZeroes(0, cs, 0)
	if werr == nil {
		werr = im.Flush()
	}
	if werr != nil {
		if errors.Is(werr, ErrWritesLost) || errors.Is(werr, ErrReadOnly) {
			return // refused: fixed
		}
		t.Fatal(werr)
	}
	im2, err := OpenDevice(memdev.FromBytes(mem.Bytes(), memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen after an acknowledged WriteZeroes: %v", err)
	}
	defer im2.Close()
	t.Logf("reopened: version %d", im2.Header().Version)
	mustNoCorruption(t, im2)
	got := make([]byte, cs)
	if _, err := im2.ReadAt(got, 0); err != nil {
		t.Fatalf("read of the zeroed cluster: %v", err)
	}
	if !bytes.Equal(got, make([]byte, cs)) {
		t.Fatalf("acknowledged zeroes read %#x", got[0])
	}
}

// DeleteSnapshot's last step sets COPIED in the active L1 where a
// table's refcount fell back to 1 (fixCopiedLocked). If that write
// fails (ENOSPC: nothing landed), the media lacks a COPIED flag memory
// has, which only costs a copy on a later write; the snapshot is durably
// gone. Since dc7b6b1 the image refuses every write until reopened.
func TestRegress_DeleteSnapshotCopiedFixFailureKeepsWrites(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	var l1Off, l1End atomic.Int64
	d := errordev.New(mem, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		if op == errordev.Write && off < l1End.Load() && l1Off.Load() < off+n && armed.CompareAndSwap(true, false) {
			return errordev.ErrInjectedENOSPC
		}
		return nil
	}), errordev.Options{})
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mustWrite(t, im, bytes.Repeat([]byte{0x10}, cs), 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	h := im.Header()
	l1Off.Store(int64(h.L1TableOffset))
	l1End.Store(int64(h.L1TableOffset) + int64(h.L1Size)*8)
	armed.Store(true)
	err = im.DeleteSnapshot("s")
	t.Logf("DeleteSnapshot: %v; snapshots left %d", err, len(im.Snapshots()))
	if _, err := im.WriteAt(bytes.Repeat([]byte{0x20}, 4096), 4096); err != nil {
		t.Fatalf("write after DeleteSnapshot's COPIED fix failed for space: %v", err)
	}
}

// CreateSnapshot's header write naming the new snapshot table
// (a pointer-table write, Q4) lands, then fails: memory restores the
// header and keeps no snapshot, writes go on, and the snapshot's
// references (counted, the L1 copy, the table) are leaks to a live
// Check repair, which frees them; a COW write then frees the data
// cluster the media's snapshot still names, and new data reuses it.
// After a crash the media names the snapshot: corruption.
func TestRegress_CreateSnapshotHeaderLandedThenRepair(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	d := &landsThenFailsHdr{Device: mem}
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mustWrite(t, im, bytes.Repeat([]byte{0x10}, cs), 0)
	d.land.Store(true)
	_, err = im.CreateSnapshot("s")
	t.Logf("CreateSnapshot: %v; snapshots in memory %d", err, len(im.Snapshots()))
	if err == nil {
		t.Skip("no failure")
	}
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	switch {
	case errors.Is(err, ErrReadOnly):
		return // refused: fixed
	case err != nil:
		t.Fatal(err)
	default:
		t.Logf("repair: %d leaks fixed, %d corruptions fixed: %v", r.LeaksFixed, r.CorruptionsFixed, head(r.Messages, 6))
	}
	for k := int64(0); k < 4; k++ {
		if _, err := im.WriteAt(bytes.Repeat([]byte{0xee}, cs), k*cs); err != nil {
			if errors.Is(err, ErrWritesLost) {
				return
			}
			t.Fatal(err)
		}
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im2 := reopenR5(t, mem)
	defer im2.Close()
	t.Logf("reopened: %d snapshots", len(im2.Snapshots()))
	mustNoCorruption(t, im2)
}

// DeleteSnapshot's header write naming the new snapshot table is
// acknowledged, the flush after it fails (and with it the write): memory
// has dropped the snapshot, the media still names it, and writes go on;
// the snapshot's clusters are leaks to a live repair, which frees them;
// new data reuses them; after a crash the media's snapshot names them.
func TestRegress_DeleteSnapshotHeaderFlushFailureThenRepair(t *testing.T) {
	const cs = 64 << 10
	mem, d, im := openDrop(t, CreateOptions{Size: 1 << 30, ClusterSize: cs})
	defer im.Close()
	mustWrite(t, im, bytes.Repeat([]byte{0x10}, cs), 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, cs), 0) // the snapshot alone keeps table A, data d0
	d.lo.Store(0)
	d.hi.Store(8)
	d.armed.Store(true)
	err := im.DeleteSnapshot("s")
	t.Logf("DeleteSnapshot: %v; snapshots in memory %d", err, len(im.Snapshots()))
	if err == nil {
		t.Skip("no failure")
	}
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	switch {
	case errors.Is(err, ErrReadOnly):
		return // refused: fixed
	case err != nil:
		t.Fatal(err)
	default:
		t.Logf("repair: %d leaks fixed: %v", r.LeaksFixed, head(r.Messages, 6))
	}
	for k := int64(0); k < 4; k++ {
		if _, err := im.WriteAt(bytes.Repeat([]byte{0xee}, cs), 600<<20+k*cs); err != nil {
			if errors.Is(err, ErrWritesLost) {
				return
			}
			t.Fatal(err)
		}
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	im2 := reopenR5(t, mem)
	defer im2.Close()
	t.Logf("reopened: %d snapshots", len(im2.Snapshots()))
	mustNoCorruption(t, im2)
}
