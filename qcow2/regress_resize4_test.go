package qcow2

// Found by a third review of the resize change and the Q4 rule; each
// test failed on the code before its fix, and its comment describes that
// failure.

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/holddev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// landsThenFailsHdr writes through, then reports EIO, for the first
// header write (offset 0) once armed; failHdr fails the next header write
// without landing.
type landsThenFailsHdr struct {
	block.Device
	land, fail atomic.Bool
}

func (d *landsThenFailsHdr) Writev(off int64, bufs [][]byte) error {
	if off == 0 && d.fail.CompareAndSwap(true, false) {
		return errordev.ErrInjectedEIO
	}
	err := d.Device.Writev(off, bufs)
	if off == 0 && d.land.CompareAndSwap(true, false) {
		return errordev.ErrInjectedEIO
	}
	return err
}

// a growth over a backing file whose header write failed after
// landing: the media says the new size, memory the old one, and the grown
// range holds the zero clusters that hide the backing file. A SetVersion(2)
// that is then refused (a zero cluster inside the size) has already made
// those zero clusters unallocated, flushed: the file names the new size
// and the grown range now reads the backing file.
func TestRegress_DowngradeAfterLandedGrowKeepsZeros(t *testing.T) {
	for _, mode := range []string{"refused", "v2-header-fails", "control"} {
		t.Run(mode, func(t *testing.T) {
			const cs = 64 << 10
			dir := testkit.Dir(t)
			base := filepath.Join(dir, "base.raw")
			if err := os.WriteFile(base, bytes.Repeat([]byte{0xbd}, 8<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, "top.qcow2")
			if err := Create(p, CreateOptions{Size: 2 << 20, ClusterSize: cs, BackingFile: base, BackingFormat: "raw"}); err != nil {
				t.Fatal(err)
			}
			var d *landsThenFailsHdr
			im, err := Open(p, Options{Opener: func(path string, ro bool) (block.Device, error) {
				dev, err := DefaultOpener(path, ro)
				if err != nil || path != p {
					return dev, err
				}
				d = &landsThenFailsHdr{Device: dev}
				return d, nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			d.land.Store(true)
			if err := im.Truncate(4 << 20); err == nil {
				t.Fatal("growth succeeded despite the failed header write")
			}
			if n, _ := im.Size(); n != 2<<20 {
				t.Fatalf("size %d", n)
			}
			if mode == "refused" {
				// A zero cluster inside the size: the downgrade is refused
				// (now the failed header write refuses writes already).
				if err := im.WriteZeroes(0, cs, 0); err != nil && !errors.Is(err, ErrWritesLost) {
					t.Fatal(err)
				}
			} else if mode != "control" {
				d.fail.Store(true)
			}
			err = errors.New("no downgrade")
			if mode != "control" {
				err = im.SetVersion(2)
			}
			t.Logf("SetVersion(2): %v", err)
			if err == nil {
				t.Skip("downgrade succeeded")
			}
			if err := im.Close(); err != nil && !errors.Is(err, errordev.ErrInjected) {
				t.Fatal(err)
			}
			im2, err := Open(p, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer im2.Close()
			sz, _ := im2.Size()
			t.Logf("reopened: size %d", sz)
			if sz > 2<<20 {
				got := make([]byte, sz-(2<<20))
				if _, err := im2.ReadAt(got, 2<<20); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, make([]byte, len(got))) {
					t.Fatalf("after a SetVersion(2) that failed, the grown range [2 MiB, %d) reads %#x (the backing file), want zeros", sz, got[0])
				}
			}
			r, err := im2.Check(CheckOptions{})
			if err != nil || r.Corruptions > 0 {
				t.Fatalf("check: %v %+v", err, r)
			}
		})
	}
}

// after a Shrink whose header write failed (writes refused, the size
// guests see cut, the header's size the old one), Readv past Size()
// reads the backing file where the Shrink's full discard left the
// clusters unallocated: B2 says zeros, and before 91b4895 (mapRun by
// vsize) it was zeros.
func TestRegress_ReadvPastSizeAfterFailedShrinkReadsZeros(t *testing.T) {
	const cs = 64 << 10
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0xbd}, 8<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "top.qcow2")
	if err := Create(p, CreateOptions{Size: 4 << 20, ClusterSize: cs, BackingFile: base, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	var d *landsThenFailsHdr
	im, err := Open(p, Options{Opener: func(path string, ro bool) (block.Device, error) {
		dev, err := DefaultOpener(path, ro)
		if err != nil || path != p {
			return dev, err
		}
		d = &landsThenFailsHdr{Device: dev}
		return d, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mustWrite(t, im, bytes.Repeat([]byte{0x33}, cs), 3<<20)
	d.fail.Store(true) // the header write fails, nothing lands
	if err := im.Shrink(2 << 20); err == nil {
		t.Fatal("shrink succeeded")
	}
	sz, _ := im.Size()
	buf := make([]byte, 4096)
	if err := im.Readv(3<<20, [][]byte{buf}); err != nil {
		t.Fatal(err)
	}
	st, _ := im.BlockStatus(3<<20, 4096)
	t.Logf("Size %d; BlockStatus past it: %+v", sz, st)
	if int64(3<<20) >= sz && !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("Readv at 3 MiB, past Size() %d, reads %#x, want zeros (B2)", sz, buf[0])
	}
}

// ensureRefblock's flush failure (before the refcount table entry)
// keeps the new block's role (metaRefblock) and its dirty cache entry;
// memory still treats the range as uncovered, so the block's cluster is
// free, and the next allocation in that range puts the new block (or
// data) there: the overlap check finds the stale role and marks the
// image corrupt.
func TestRegress_RefblockFlushFailureNoSpuriousCorrupt(t *testing.T) {
	const cs = 512
	open := func(failFlush *atomic.Bool) *Image {
		mem := memdev.New(memdev.Options{})
		if err := CreateDevice(mem, CreateOptions{Size: 64 << 20, ClusterSize: cs}); err != nil {
			t.Fatal(err)
		}
		d := errordev.New(mem, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
			if op == errordev.Flush && failFlush.CompareAndSwap(true, false) {
				return errordev.ErrInjectedEIO
			}
			return nil
		}), errordev.Options{})
		im, err := OpenDevice(d, Options{PreallocSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		return im
	}
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
	// Dry run: which write creates the second refcount block?
	var never atomic.Bool
	im := open(&never)
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
	var fail atomic.Bool
	im = open(&fail)
	defer im.Close()
	for i := 0; i < k; i++ {
		mustWrite(t, im, data, int64(i)*cs)
	}
	fail.Store(true)
	_, err := im.WriteAt(data, int64(k)*cs)
	t.Logf("write %d with the refblock flush failing: %v", k, err)
	for i := k; i < k+8; i++ {
		if _, err := im.WriteAt(data, int64(i)*cs); err != nil {
			t.Fatalf("write %d after a transient flush failure: %v (corrupt=%v)", i, err, im.corrupt)
		}
	}
}

// enospcL1Dev holds the first write into [off, end) once armed until
// released, then fails it with ENOSPC without writing (mayHaveLanded
// false).
type enospcL1Dev struct {
	block.Device
	armed            atomic.Bool
	off, end         atomic.Int64
	reached, release chan struct{}
}

func (d *enospcL1Dev) Writev(off int64, bufs [][]byte) error {
	if off < d.end.Load() && d.off.Load() < off+block.VecLen(bufs) && d.armed.CompareAndSwap(true, false) {
		close(d.reached)
		<-d.release
		return errordev.ErrInjectedENOSPC
	}
	return d.Device.Writev(off, bufs)
}

// ensureL2Locked publishes the new L1 entry in memory before its
// write; when that write fails with ENOSPC, 91b4895 frees the new table
// at once (abortL2: freeClustersLocked, not held). A lock-free reader
// that loaded the published entry inside the data gate (Q12) and then
// reads the table from the device (a cache miss: the clean table was
// evicted) reads whatever guest data the next allocation put in the
// freed cluster, as L2 entries: it returns another guest range's data.
func TestRegress_L1EntryENOSPCHoldsTableUnderReader(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	hd := holddev.New(mem, holddev.Options{NoClose: true})
	d := &enospcL1Dev{Device: hd, reached: make(chan struct{}), release: make(chan struct{})}
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	defer hd.ReleaseAll()
	secret := bytes.Repeat([]byte{0x5e}, cs)
	mustWrite(t, im, secret, 1<<20) // L1 entry 0
	st, err := im.BlockStatus(1<<20, cs)
	if err != nil || st.HostOff < 0 {
		t.Fatal(st, err)
	}
	hS := st.HostOff
	h := im.Header()
	d.off.Store(int64(h.L1TableOffset))
	d.end.Store(int64(h.L1TableOffset) + int64(h.L1Size)*8)
	d.armed.Store(true)
	const G = 600 << 20 // L1 entry 1: a new L2 table
	w := async(func() error { _, err := im.WriteAt(bytes.Repeat([]byte{0x22}, 4096), G); return err })
	select {
	case <-d.reached:
	case <-time.After(holdTimeout):
		t.Fatal("the L1 entry write never came")
	}
	T := int64(im.l1.Load().load(1).Offset())
	if T == 0 {
		t.Fatal("L1 entry 1 not published")
	}
	// The clean new table leaves the cache (as an eviction may).
	for s := uint64(0); s < cs; s += im.sliceSize {
		im.l2c.Discard(T + int64(s))
	}
	hr := hd.Hold(holddev.Match{Kinds: holddev.Read, Off: T, End: T + cs})
	got := make([]byte, 4096)
	const R = G + 8*cs
	r := async(func() error { return im.Readv(R, [][]byte{got}) })
	if !hr.Wait(holdTimeout) {
		t.Fatal("the reader did not load the new table")
	}
	close(d.release)
	if err := <-w; err == nil {
		t.Fatal("write succeeded despite ENOSPC")
	} else {
		t.Logf("W: %v", err)
	}
	// Guest data that reads as L2 entries naming the secret cluster.
	fake := make([]byte, cs)
	for i := 0; i < cs; i += 8 {
		e := uint64(hS) | 1<<63
		for k := 0; k < 8; k++ {
			fake[i+k] = byte(e >> (56 - 8*k))
		}
	}
	mustWrite(t, im, fake, 2<<20)
	st2, _ := im.BlockStatus(2<<20, cs)
	t.Logf("freed table %#x; the next data cluster %#x", T, st2.HostOff)
	hr.Release()
	waitErr(t, r, "reader")
	if !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatalf("a read of never-written %#x returned %#x (the freed table reused for data, read as L2 entries)", R, got[0])
	}
}

// ApplySnapshot's write of the active L1 table (a pointer-table
// write: it names the snapshot's L2 tables instead of the active ones)
// fails: memory names the snapshot's tables, the media the old ones, and
// writes are not refused. The old tables and their data, unreferenced in
// memory but still counted, are leaks to a live Check repair, which frees
// them; new allocations reuse them; after a crash the media's L1 still
// names them as L2 tables: corruption. Q4 (91b4895) says every write that
// points at a table refuses writes when it fails.
func TestRegress_FailedApplySnapshotL1WriteThenRepair(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	var armed atomic.Bool
	var l1Off, l1End atomic.Int64
	d := errordev.New(mem, errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		if op == errordev.Write && off < l1End.Load() && l1Off.Load() < off+n && armed.CompareAndSwap(true, false) {
			return errordev.ErrInjectedEIO
		}
		return nil
	}), errordev.Options{})
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	mustWrite(t, im, bytes.Repeat([]byte{0x10}, cs), 0) // L1 entry 0: table A
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, cs), 0) // COW: table A', data d1
	h := im.Header()
	l1Off.Store(int64(h.L1TableOffset))
	l1End.Store(int64(h.L1TableOffset) + int64(h.L1Size)*8)
	armed.Store(true)
	err = im.ApplySnapshot("s")
	t.Logf("ApplySnapshot: %v", err)
	if err == nil {
		t.Skip("no failure")
	}
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	switch {
	case errors.Is(err, ErrReadOnly):
		t.Log("repair refused")
	case err != nil:
		t.Fatal(err)
	default:
		t.Logf("repair: %d leaks fixed: %v", r.LeaksFixed, head(r.Messages, 4))
	}
	// New allocations in L1 entry 1's range take the freed clusters.
	acked := map[int64]bool{}
	junk := bytes.Repeat([]byte{0xff}, cs)
	for k := int64(0); k < 4; k++ {
		if _, err := im.WriteAt(junk, 600<<20+k*cs); err == nil {
			acked[k] = true
		}
	}
	if err := im.Flush(); err != nil && !errors.Is(err, ErrWritesLost) {
		t.Fatal(err)
	}
	im2, err := OpenDevice(memdev.FromBytes(mem.Bytes(), memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer im2.Close()
	mustNoCorruption(t, im2)
	for k := range acked {
		if got := readBack(t, im2, 600<<20+k*cs, cs); !bytes.Equal(got, junk) {
			t.Fatalf("acknowledged write %d lost", k)
		}
	}
}
