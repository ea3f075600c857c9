package qcow2

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

// A write that passed its size check before a Shrink allocated a
// cluster past the new end after the Shrink had discarded that range:
// the data came back once the image grew again. Shrink now cuts the
// size first and waits for the writes that checked against the old
// one before it discards.
func TestRegress_ShrinkWaitsForWritesPastTheNewEnd(t *testing.T) {
	const cs = 64 << 10
	const newSize = 32 << 20
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	a := bytes.Repeat([]byte{0xaa}, 4096)
	b := bytes.Repeat([]byte{0xbb}, 4096)
	// W covers the last cluster below the new end and the first past it;
	// its first cluster's data write is held.
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: isData(a)})
	w := async(func() error { _, err := im.WriteAt(append(append([]byte(nil), a...), b...), newSize-4096); return err })
	if !h.Wait(holdTimeout) {
		t.Fatal("W never reached the device")
	}
	s := async(func() error { return im.Shrink(newSize) })
	sBlocked := blocked(s, 100*time.Millisecond)
	h.Release()
	if sBlocked {
		waitErr(t, s, "shrink")
	}
	var werr error
	select {
	case werr = <-w:
	case <-time.After(holdTimeout):
		t.Fatal("W never returned")
	}
	if werr != nil && !errors.Is(werr, ErrOutOfRange) {
		t.Fatalf("W: %v, want success or ErrOutOfRange", werr)
	}
	if n, _ := im.Size(); n != newSize {
		t.Fatalf("size %d after shrink", n)
	}
	if err := im.Truncate(2 * newSize); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, im, newSize, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("past the shrunken end reads %#x after growing again, want zeros (W: %v)", got[0], werr)
	}
	if got := readBack(t, im, newSize-4096, 4096); werr == nil && !bytes.Equal(got, a) {
		t.Fatalf("W's part below the new end reads %#x", got[0])
	}
	checkClean(t, im, r.mem)
}

// A write into the last cluster that crossed the new, unaligned end was
// in flight when Shrink looked at that cluster (unallocated yet, so
// nothing to zero); it landed past the end, and growing the image again
// showed its bytes there. Growing now zeroes the old end's cluster past
// the old end, as QEMU shows zeros in a grown range; on plain, LUKS and
// extended L2 images (the review's sanity cases for the last two).
func TestRegress_GrowZeroesTheOldTail(t *testing.T) {
	const cs = 64 << 10
	const newSize = 32<<20 + 2048 + 512
	for _, tc := range []struct {
		name string
		co   CreateOptions
		o    Options
	}{
		{"plain", CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1}},
		{"luks", CreateOptions{ClusterSize: cs, Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte("p"), Iterations: 1000}}, Options{PreallocSize: -1, Passphrase: []byte("p")}},
		{"xl2", CreateOptions{ClusterSize: cs, ExtendedL2: true}, Options{PreallocSize: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newHoldRig(t, tc.co, tc.o)
			im := r.im
			a := patternBuf(4096, 7)
			fn := isData(a[:64])
			if tc.name == "luks" { // encrypted on the device
				fn = func(o holddev.Op) bool { return o.Len >= 4096 && o.Off > 1<<20 }
			}
			h := r.hd.Hold(holddev.Match{Kinds: holddev.Write | holddev.ZeroWrite, Fn: fn})
			w := async(func() error { _, err := im.WriteAt(a, newSize-1024); return err })
			if !h.Wait(holdTimeout) {
				t.Fatal("W never reached the device")
			}
			s := async(func() error { return im.Shrink(newSize) })
			sBlocked := blocked(s, 100*time.Millisecond)
			h.Release()
			if sBlocked {
				waitErr(t, s, "shrink")
			}
			waitErr(t, w, "W")
			if err := im.Truncate(64 << 20); err != nil {
				t.Fatal(err)
			}
			if got := readBack(t, im, newSize, 3072); !bytes.Equal(got, make([]byte, 3072)) {
				t.Fatalf("past the old end reads %#x after growing, want zeros", got[0])
			}
			if got := readBack(t, im, newSize-1024, 1024); !bytes.Equal(got, a[:1024]) {
				t.Fatal("W's part below the end is lost")
			}
			if tc.name == "luks" { // qemu-img check needs the secret
				if err := im.Close(); err != nil {
					t.Fatal(err)
				}
				r.im = nil
				im2, err := OpenDevice(r.mem, Options{ReadOnly: true, Passphrase: tc.o.Passphrase})
				if err != nil {
					t.Fatal(err)
				}
				defer im2.Close()
				mustClean(t, im2)
				return
			}
			checkClean(t, im, r.mem)
		})
	}
}

// Truncate grew an image whose backing file reaches past the old end
// and the backing data showed through in the new range (the library;
// qimg resize zeroed it after the header change). Growing zeroes that
// range first, as QEMU does, and refuses on version 2.
func TestRegress_GrowHidesBackingData(t *testing.T) {
	const cs = 64 << 10
	dir := testkit.Dir(t)
	base := filepath.Join(dir, "base.raw")
	bdata := bytes.Repeat([]byte{0xbd}, 8<<20)
	if err := os.WriteFile(base, bdata, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, compat := range []string{"1.1", "0.10"} {
		p := filepath.Join(dir, "top"+compat+".qcow2")
		if err := Create(p, CreateOptions{Size: 2<<20 + 512, ClusterSize: cs, Compat: compat, BackingFile: base, BackingFormat: "raw"}); err != nil {
			t.Fatal(err)
		}
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = im.Truncate(6 << 20)
		if compat == "0.10" {
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("v2: growing over backing data: %v, want ErrUnsupported", err)
			}
			if n, _ := im.Size(); n != 2<<20+512 {
				t.Fatalf("v2: size %d after the refused growth", n)
			}
		} else {
			if err != nil {
				t.Fatal(err)
			}
			if got := readBack(t, im, 2<<20+512, 4<<20-512); !bytes.Equal(got, make([]byte, len(got))) {
				t.Fatalf("the grown range reads the backing file's %#x", got[0])
			}
			if got := readBack(t, im, 0, 2<<20+512); !bytes.Equal(got, bdata[:2<<20+512]) {
				t.Fatal("the old range no longer reads the backing data")
			}
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		ownCheck(t, p)
		testkit.QemuCheck(t, p)
	}
}

// growL1 pointed the header at the new L1 table, then the flush failed:
// it kept the old table in memory (and on disk) and went on allocating
// into it, while the header on disk might name the new one. When it did,
// the L2 tables linked afterwards were lost on reopen, flushed writes
// with them. Now the image refuses writes until it is reopened
// (ErrWritesLost), with both tables kept, and either header is
// consistent.
func TestRegress_GrowL1FlushFailureLosesNoWrites(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	var armed, headerWritten atomic.Bool
	ed := errordev.New(mem, headerFlushFault(&armed, &headerWritten), errordev.Options{})
	im, err := OpenDevice(ed, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{0xaa}, 4096)
	if _, err := im.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	if err := im.Truncate(1 << 40); err == nil {
		t.Fatal("the growth succeeded despite the failed flush")
	}
	b := bytes.Repeat([]byte{0xbb}, 4096)
	_, werr := im.WriteAt(b, 600<<20) // a new L2 table (L1 entry 1)
	if werr == nil {
		werr = im.Flush()
	}
	if werr != nil && !errors.Is(werr, ErrWritesLost) {
		t.Fatalf("write after the failed growth: %v", werr)
	}
	im.Close()
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	if got := readBack(t, im2, 0, 4096); !bytes.Equal(got, a) {
		t.Fatal("the data written before the growth is lost")
	}
	if got := readBack(t, im2, 600<<20, 4096); werr == nil && !bytes.Equal(got, b) {
		t.Fatalf("an acknowledged and flushed write reads %#x after reopen", got[0])
	}
	mustNoCorruption(t, im2)
}

// Shrink waits for a queue's fast writes that checked the old size; a
// queue's owner that calls it with one unreaped gets ErrResizeBusy after
// about a second, the size unchanged, instead of waiting for itself.
func TestShrinkFromQueueOwnerIsBounded(t *testing.T) {
	const cs = 64 << 10
	r := newHoldRig(t, CreateOptions{ClusterSize: cs}, Options{PreallocSize: -1})
	im := r.im
	im.idleWait = 200 * time.Millisecond
	mustWrite(t, im, bytes.Repeat([]byte{0x01}, cs), 40<<20) // allocated: the fast path takes the overwrite
	q, err := im.NewQueue(4)
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte{0xaa}, 4096)
	h := r.hd.Hold(holddev.Match{Kinds: holddev.Write, Fn: isData(a)})
	fast := im.c.queueFast.Load()
	if err := q.Submit(&block.Req{Op: block.OpWrite, Off: 40 << 20, Buf: a}); err != nil {
		t.Fatal(err)
	}
	if im.c.queueFast.Load() == fast {
		t.Fatal("the queued write did not take the fast path")
	}
	if !h.Wait(holdTimeout) {
		t.Fatal("the queued write never reached the device")
	}
	if err := im.Shrink(32 << 20); !errors.Is(err, ErrResizeBusy) {
		t.Fatalf("Shrink by the owner with a write unreaped: %v, want ErrResizeBusy", err)
	}
	if n, _ := im.Size(); n != 64<<20 {
		t.Fatalf("size %d after the refused shrink", n)
	}
	h.Release()
	waitQueued(t, q, "the queued write")
	if err := im.Shrink(32 << 20); err != nil {
		t.Fatal(err)
	}
	if err := im.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, im, 40<<20, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("past the shrunken end reads %#x after growing again", got[0])
	}
	checkClean(t, im, r.mem)
}

// The refcount table's growth has the same ambiguity as the L1 table's:
// the header write or its flush failed, memory kept the old table (which
// does not cover the new area), and the allocator went on counting
// clusters there in blocks only the old table knew; reopened with the
// new table named by the header, those clusters were in use with
// refcount 0. Now writes are refused until the image is reopened.
func TestRegress_ReftableGrowthFlushFailureLosesNoWrites(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 64 << 20, ClusterSize: 512}); err != nil {
		t.Fatal(err)
	}
	var armed, headerWritten atomic.Bool
	ed := errordev.New(mem, headerFlushFault(&armed, &headerWritten), errordev.Options{})
	im, err := OpenDevice(ed, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	buf := make([]byte, 64<<10)
	acked := map[int64]byte{}
	var werr error
	for off := int64(0); off < 48<<20 && werr == nil; off += int64(len(buf)) {
		b := byte(off>>16) | 1
		for i := range buf {
			buf[i] = b
		}
		if _, werr = im.WriteAt(buf, off); werr == nil {
			acked[off] = b
		}
	}
	if armed.Load() {
		t.Fatal("the refcount table never grew")
	}
	// After the failure: writes are refused, or what they wrote must
	// survive a reopen.
	for off := int64(48 << 20); off < 56<<20; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = 0x5a
		}
		if _, err := im.WriteAt(buf, off); err == nil {
			acked[off] = 0x5a
		} else if !errors.Is(err, ErrWritesLost) {
			t.Fatalf("write after the failed growth: %v", err)
		}
	}
	if err := im.Flush(); err != nil && !errors.Is(err, ErrWritesLost) {
		t.Logf("flush: %v", err)
	}
	im.Close()
	im2, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	for off, b := range acked {
		if got := readBack(t, im2, off, len(buf)); !bytes.Equal(got, bytes.Repeat([]byte{b}, len(buf))) {
			t.Fatalf("acknowledged write at %#x reads %#x after reopen", off, got[0])
		}
	}
	mustNoCorruption(t, im2)
}

// landedFailDev writes through, then reports failure, for the first
// write that meets [off, end) once armed: a write whose error does not
// mean it missed the media (Q4).
type landedFailDev struct {
	block.Device
	armed    atomic.Bool
	off, end atomic.Int64
}

func newLandedFailDev(d block.Device, off, end int64) *landedFailDev {
	f := &landedFailDev{Device: d}
	f.off.Store(off)
	f.end.Store(end)
	return f
}

func (d *landedFailDev) Writev(off int64, bufs [][]byte) error {
	err := d.Device.Writev(off, bufs)
	if off < d.end.Load() && d.off.Load() < off+block.VecLen(bufs) && d.armed.CompareAndSwap(true, false) {
		return errordev.ErrInjectedEIO
	}
	return err
}

// headerFlushFault fails the first flush after a header write once
// armed (headerWritten: that write came): the header may or may not
// have reached the media (Q4).
func headerFlushFault(armed, headerWritten *atomic.Bool) errordev.Injector {
	return errordev.InjectorFunc(func(op errordev.Op, off, n int64) error {
		switch {
		case !armed.Load():
		case op == errordev.Write && off == 0:
			headerWritten.Store(true)
		case op == errordev.Flush && headerWritten.Load():
			armed.Store(false)
			return errordev.ErrInjectedEIO
		}
		return nil
	})
}

// A failed L1 entry write for a new L2 table freed the table's cluster,
// and the next allocation put guest data there; the write had reached
// the media, so after a crash (or any reopen before that L1 chunk was
// written again) the L1 entry pointed at guest data as its L2 table.
// The cluster is kept (leaked) now, and the image refuses writes until
// it is reopened (a Check repair would free it as a leak meanwhile).
func TestRegress_FailedL1EntryWriteKeepsTheTable(t *testing.T) {
	const cs = 64 << 10
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30, ClusterSize: cs}); err != nil {
		t.Fatal(err)
	}
	im0, err := OpenDevice(mem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	l1 := int64(im0.Header().L1TableOffset)
	im0.Close()
	d := newLandedFailDev(mem, l1, l1+cs)
	im, err := OpenDevice(d, Options{PreallocSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, bytes.Repeat([]byte{0x11}, 4096), 600<<20) // L2 table of L1 entry 1
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	d.armed.Store(true)
	if _, err := im.WriteAt(bytes.Repeat([]byte{0x22}, 4096), 0); err == nil {
		t.Fatal("the write needing a new L2 table succeeded despite the failed L1 write")
	}
	if r, err := im.Check(CheckOptions{Repair: RepairLeaks}); err == nil && r.LeaksFixed > 0 {
		t.Logf("repair fixed %d leaks", r.LeaksFixed)
	}
	data := bytes.Repeat([]byte{0xff}, cs) // as L2 entries: garbage
	acked := map[int64]bool{}
	for k := int64(1); k <= 4; k++ {
		if _, err := im.WriteAt(data, 600<<20+k*cs); err == nil {
			acked[k] = true
		} else if !errors.Is(err, ErrWritesLost) || !errors.Is(err, errordev.ErrInjected) {
			t.Fatalf("write after the failed L1 write: %v, want ErrWritesLost with its cause", err)
		}
	}
	if err := im.Flush(); err != nil && !errors.Is(err, ErrWritesLost) {
		t.Fatal(err)
	}
	// The power cut: nothing more reaches the media.
	crash := memdev.FromBytes(mem.Bytes(), memdev.Options{})
	im.Close()
	im2, err := OpenDevice(crash, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im2.Close()
	mustNoCorruption(t, im2)
	for k := int64(1); k <= 4; k++ {
		if got := readBack(t, im2, 600<<20+k*cs, cs); acked[k] && !bytes.Equal(got, data) {
			t.Fatalf("flushed write %d reads %#x after the crash", k, got[0])
		}
	}
}

// mustNoCorruption fails the test if Check finds im corrupt; leaks are
// allowed (what a crash or a failed write may leave).
func mustNoCorruption(t *testing.T, im *Image) {
	t.Helper()
	r, err := im.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Corruptions > 0 {
		t.Fatalf("%d corruptions: %v", r.Corruptions, head(r.Messages, 5))
	}
}
