package filter_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// FL8: discards through the layers.

// span is a discard a child received.
type span struct{ off, n int64 }

// discardDev is a memdev that is a block.Discarder (memdev is none): a
// discard zeroes the whole grain-sized blocks inside the range and leaves
// partial ones as they were, as a qcow2 image leaves partial clusters. It
// records every discard it receives.
type discardDev struct {
	*memdev.Dev
	grain int64
	mu    sync.Mutex
	got   []span
}

func newDiscardDev(grain int64, o memdev.Options) *discardDev {
	return &discardDev{Dev: memdev.New(o), grain: grain}
}

func (d *discardDev) Discard(off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	d.mu.Lock()
	d.got = append(d.got, span{off, n})
	d.mu.Unlock()
	s, e := (off+d.grain-1)/d.grain*d.grain, (off+n)/d.grain*d.grain
	if s >= e {
		return nil
	}
	return d.Dev.WriteZeroes(s, e-s, block.MayUnmap)
}

func (d *discardDev) calls() []span {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]span(nil), d.got...)
}

// discardTop is a copy-on-read top whose discards turn its allocation
// into zeros, as discarding a qcow2 v3 image with a backing file makes
// zero clusters: the range reads zeros, not the source's bytes.
type discardTop struct {
	*memAlloc
	mu      sync.Mutex
	got     []span
	reached chan struct{} // closed when the first discard arrives
}

func (d *discardTop) Discard(off, n int64) error {
	d.mu.Lock()
	if len(d.got) == 0 && d.reached != nil {
		close(d.reached)
	}
	d.got = append(d.got, span{off, n})
	d.mu.Unlock()
	return d.memAlloc.WriteZeroes(off, n, 0)
}

// discardAllocTop is conformance_test.go's allocTop, a Discarder: whole
// 4 KiB blocks inside a discard become zeros, still allocated.
type discardAllocTop struct{ *allocTop }

func (d discardAllocTop) Discard(off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	s, e := (off+allocBlock-1)/allocBlock*allocBlock, (off+n)/allocBlock*allocBlock
	if s >= e {
		return nil
	}
	return d.allocTop.WriteZeroes(s, e-s, 0)
}

// gateSrc is a source whose first read blocks until release is closed,
// after closing entered: a copy-on-read fill held in flight.
type gateSrc struct {
	block.Device
	once             sync.Once
	entered, release chan struct{}
}

func (g *gateSrc) Readv(off int64, b [][]byte) error {
	g.once.Do(func() {
		close(g.entered)
		<-g.release
	})
	return g.Device.Readv(off, b)
}

// discard calls d's Discard, failing the test when d is no Discarder.
func discard(t *testing.T, d block.Device, off, n int64) error {
	t.Helper()
	dd, ok := d.(block.Discarder)
	if !ok {
		t.Fatalf("%T is no block.Discarder", d)
	}
	return dd.Discard(off, n)
}

func fillDev(t *testing.T, d block.Device, seed uint64, n int) []byte {
	t.Helper()
	b := randBytes(rand.New(rand.NewPCG(seed, 1)), n)
	if err := block.WriteAt(d, b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCalls(t *testing.T, what string, got []span, want ...span) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: discards %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: discards %v, want %v", what, got, want)
		}
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if (want == nil) != (err == nil) || !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
}

// TestDiscard_Raw: a discard reaches the child shifted by the offset,
// is ErrRange past a fixed window like a write (QEMU raw_adjust_offset),
// and ErrNotSupported on a child that is no Discarder; neither touches
// the child.
func TestDiscard_Raw(t *testing.T) {
	const win = 64 << 10
	child := newDiscardDev(1, memdev.Options{})
	child.Truncate(win + 8192)
	before := fillDev(t, child, 1, win+8192)
	r, err := filter.NewRaw(child, filter.RawOptions{Offset: 4096, Size: win})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "discard inside", discard(t, r, 100, 200), nil)
	mustCalls(t, "inside", child.calls(), span{4196, 200})
	want := bytes.Clone(before)
	clear(want[4196:4396])
	testkit.MustEqual(t, child.Bytes(), want, "child after a discard")

	wantErr(t, "discard past the window", discard(t, r, win-10, 20), block.ErrRange)
	wantErr(t, "discard at the window's end", discard(t, r, win, 1), block.ErrRange)
	wantErr(t, "negative discard", discard(t, r, -1, 2), block.ErrRange)
	mustCalls(t, "refused", child.calls(), span{4196, 200})
	testkit.MustEqual(t, child.Bytes(), want, "child after refused discards")

	// Queued: block.Do is what a GoQueue runs.
	req := &block.Req{Op: block.OpDiscard, Off: 8192, Len: 4096}
	wantErr(t, "queued discard", block.Do(r, req), nil)
	mustCalls(t, "queued", child.calls(), span{4196, 200}, span{12288, 4096})

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "discard after Close", discard(t, r, 0, 1), block.ErrClosed)

	// A child that is no Discarder: nothing reaches it.
	mem := memdev.New(memdev.Options{})
	old := fillDev(t, mem, 2, 16<<10)
	cd := &countDev{Device: mem}
	r2, err := filter.NewRaw(cd, filter.RawOptions{Offset: 512})
	if err != nil {
		t.Fatal(err)
	}
	wantErr(t, "discard on a child that is no Discarder", discard(t, r2, 0, 4096), block.ErrNotSupported)
	wantErr(t, "queued", block.Do(r2, &block.Req{Op: block.OpDiscard, Len: 4096}), block.ErrNotSupported)
	if cd.calls.Load() != 0 {
		t.Fatalf("a refused discard made %d child calls", cd.calls.Load())
	}
	testkit.MustEqual(t, mem.Bytes(), old, "child after a refused discard")
}

// TestDiscard_Throttle: a discard is charged as a write of its length
// (QEMU's throttle_co_pdiscard intercepts it with is_write), on the fake
// clock, and reaches the child as it was; on a child that is no
// Discarder it is ErrNotSupported and charged nothing.
func TestDiscard_Throttle(t *testing.T) {
	ms := time.Millisecond
	lim := filter.ThrottleLimits{BPSWrite: 1 << 20, BPSRead: 1 << 20, IOPSWrite: 1000, Burst: ms}
	clk := &fakeClock{now: time.Unix(0, 0)}
	child := newDiscardDev(4096, memdev.Options{})
	th := filter.NewThrottle(child, lim, clk)
	wantErr(t, "discard", discard(t, th, 4096, 1<<20), nil)
	mustCalls(t, "throttle", child.calls(), span{4096, 1 << 20})
	// 1 MiB at 1 MiB/s, less the 4 KiB burst floor.
	if d, want := time.Duration(th.M.DelayNsec.Load()), 996093750*time.Nanosecond; th.M.Delayed.Load() != 1 || d-want > time.Microsecond || want-d > time.Microsecond {
		t.Fatalf("discard of 1 MiB at 1 MiB/s: delayed %d for %v, want 1 for %v", th.M.Delayed.Load(), d, want)
	}
	// The read bucket was not charged: a read of the burst passes at once.
	if d := th.Delay(false, 4096); d != 0 {
		t.Fatalf("a read after a discard waits %v: the discard was charged as a read", d)
	}
	// Queued.
	wantErr(t, "queued discard", block.Do(th, &block.Req{Op: block.OpDiscard, Off: 0, Len: 4096}), nil)
	mustCalls(t, "queued", child.calls(), span{4096, 1 << 20}, span{0, 4096})

	// No Discarder under it: refused, nothing charged, nothing called.
	clk2 := &fakeClock{now: time.Unix(0, 0)}
	cd := &countDev{Device: memdev.New(memdev.Options{})}
	th2 := filter.NewThrottle(cd, lim, clk2)
	wantErr(t, "discard on a child that is no Discarder", discard(t, th2, 0, 1<<20), block.ErrNotSupported)
	wantErr(t, "queued", block.Do(th2, &block.Req{Op: block.OpDiscard, Len: 1 << 20}), block.ErrNotSupported)
	if cd.calls.Load() != 0 || th2.M.Delayed.Load() != 0 {
		t.Fatalf("a refused discard: %d child calls, %d delays", cd.calls.Load(), th2.M.Delayed.Load())
	}
	if d := th2.Delay(true, 4096); d != 0 {
		t.Fatalf("a write after a refused discard waits %v: the discard was charged", d)
	}
}

// TestDiscard_CopyOnRead: a discard goes to the top (QEMU's
// cor_co_pdiscard forwards to its file), never to the source; on a top
// that is no Discarder it is ErrNotSupported.
func TestDiscard_CopyOnRead(t *testing.T) {
	const size = 64 << 10
	top := &discardTop{memAlloc: newMemAlloc(size)}
	src := memdev.FromBytes(bytes.Repeat([]byte{0xaa}, size), memdev.Options{})
	c := filter.NewCopyOnRead(top, src)
	data := bytes.Repeat([]byte{0x55}, 4096)
	if err := block.WriteAt(c, data, 0); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "discard", discard(t, c, 1000, 2000), nil)
	wantErr(t, "queued discard of an unallocated range", block.Do(c, &block.Req{Op: block.OpDiscard, Off: 8192, Len: 4096}), nil)
	top.mu.Lock()
	mustCalls(t, "copy-on-read", top.got, span{1000, 2000}, span{8192, 4096})
	top.mu.Unlock()
	got := make([]byte, 16384)
	if err := block.ReadAt(c, got, 0); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0xaa}, 16384)
	copy(want, data)
	clear(want[1000:3000])
	clear(want[8192:12288]) // the top's zeros, not the source's bytes
	testkit.MustEqual(t, got, want, "read after discards")
	testkit.MustEqual(t, src.Bytes(), bytes.Repeat([]byte{0xaa}, size), "source after discards")

	cd := &countDev{Device: memdev.New(memdev.Options{})}
	c2 := filter.NewCopyOnRead(allocAll{cd}, nil)
	wantErr(t, "discard on a top that is no Discarder", discard(t, c2, 0, 4096), block.ErrNotSupported)
	wantErr(t, "queued", block.Do(c2, &block.Req{Op: block.OpDiscard, Len: 4096}), block.ErrNotSupported)
	if cd.calls.Load() != 0 {
		t.Fatalf("a refused discard made %d top calls", cd.calls.Load())
	}
}

// TestDiscard_CopyOnReadRacesCopy is FL5 for discards: a read copying a
// range from the source is held after it read the source; a discard of
// that range meanwhile must not end up under the copy's older source
// bytes. The discard waits for the copy (its range lock), so the top ends
// as the discard left it: zeros.
func TestDiscard_CopyOnReadRacesCopy(t *testing.T) {
	const size = 16 << 10
	top := &discardTop{memAlloc: newMemAlloc(size), reached: make(chan struct{})}
	g := &gateSrc{
		Device:  memdev.FromBytes(bytes.Repeat([]byte{0xaa}, size), memdev.Options{}),
		entered: make(chan struct{}), release: make(chan struct{}),
	}
	c := filter.NewCopyOnRead(top, g)
	readErr := make(chan error, 1)
	got := make([]byte, 4096)
	go func() { readErr <- block.ReadAt(c, got, 0) }()
	<-g.entered // the copy has the range and is reading the source
	dc, ok := block.Device(c).(block.Discarder)
	if !ok {
		t.Fatalf("%T is no block.Discarder", c)
	}
	discErr := make(chan error, 1)
	go func() { discErr <- dc.Discard(0, 4096) }()
	// Without the lock the discard reaches the top at once; with it, it
	// cannot until the copy is done. Either way, let the copy go on.
	select {
	case <-top.reached:
	case <-time.After(50 * time.Millisecond):
	}
	close(g.release)
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	if err := <-discErr; err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, bytes.Repeat([]byte{0xaa}, 4096), "the racing read (it began first)")
	testkit.MustEqual(t, top.Bytes()[:4096], make([]byte, 4096), "top after the discard that followed the copy")
	after := make([]byte, 4096)
	if err := block.ReadAt(c, after, 0); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, after, make([]byte, 4096), "read after the discard")
}

// TestDiscard_Mirror: a discard goes to the source (QEMU's
// bdrv_mirror_top_pdiscard) and its chunks are copied again, so after
// Complete the target reads what the source reads, whatever the source
// left in the discarded range (here: its partial 512-byte blocks) and
// even when the target is no Discarder or discards otherwise (MR1..MR3).
func TestDiscard_Mirror(t *testing.T) {
	const size = 1 << 20
	for _, tc := range []struct {
		name  string
		tgt   func() (block.Device, func() []byte)
		early bool // discard before the first pass converged
		dOff  int64
		dLen  int64
	}{
		{"converged-plain-target", plainTarget, false, 1000, 300000},
		{"converged-discarding-target", discardingTarget, false, 70000, 200000},
		{"early", plainTarget, true, 0, size},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newDiscardDev(512, memdev.Options{})
			src.Truncate(size)
			old := fillDev(t, src, 3, size)
			tgt, tgtBytes := tc.tgt()
			m, err := filter.NewMirror(src, tgt, filter.MirrorOptions{Granularity: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if !tc.early {
				if err := m.Wait(); err != nil {
					t.Fatal(err)
				}
			}
			wantErr(t, "discard", discard(t, m, tc.dOff, tc.dLen), nil)
			mustCalls(t, "source", src.calls(), span{tc.dOff, tc.dLen})
			if bytes.Equal(src.Bytes(), old) {
				t.Fatal("the discard changed nothing on the source")
			}
			if m.M.Discards.Load() != 1 {
				t.Fatalf("Discards %d, want 1", m.M.Discards.Load())
			}
			tg, err := m.Complete()
			if err != nil {
				t.Fatal(err)
			}
			defer tg.Close()
			testkit.MustEqual(t, tgtBytes(), src.Bytes(), "target after Complete")
			if dt, ok := tg.(*discardDev); ok && len(dt.calls()) != 0 {
				t.Fatalf("the target received discards %v; they could leave it reading otherwise than the source", dt.calls())
			}
			wantErr(t, "discard after Complete", discard(t, m, 0, 1), filter.ErrCompleted)
		})
	}

	t.Run("refused", func(t *testing.T) {
		src := memdev.New(memdev.Options{})
		src.Truncate(size)
		old := fillDev(t, src, 4, size)
		m, err := filter.NewMirror(src, memdev.New(memdev.Options{}), filter.MirrorOptions{Granularity: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if err := m.Wait(); err != nil {
			t.Fatal(err)
		}
		redirty := m.M.ChunksRedirty.Load()
		wantErr(t, "discard on a source that is no Discarder", discard(t, m, 0, 4096), block.ErrNotSupported)
		wantErr(t, "queued", block.Do(m, &block.Req{Op: block.OpDiscard, Len: 4096}), block.ErrNotSupported)
		wantErr(t, "discard past the end", discard(t, m, size-1, 2), block.ErrRange)
		if !m.Converged() || m.M.ChunksRedirty.Load() != redirty {
			t.Fatalf("a refused discard dirtied chunks (converged %v, redirtied %d more)", m.Converged(), m.M.ChunksRedirty.Load()-redirty)
		}
		testkit.MustEqual(t, src.Bytes(), old, "source after refused discards")
	})
}

func plainTarget() (block.Device, func() []byte) {
	d := memdev.New(memdev.Options{})
	return d, d.Bytes
}

func discardingTarget() (block.Device, func() []byte) {
	d := newDiscardDev(64<<10, memdev.Options{})
	return d, d.Bytes
}

// TestDiscard_NotDiscarders: blkverify and quorum are no Discarders
// (QEMU's drivers have no pdiscard), even over children that are; a
// queued discard is ErrNotSupported and reaches no child.
func TestDiscard_NotDiscarders(t *testing.T) {
	kids := []*discardDev{newDiscardDev(1, memdev.Options{}), newDiscardDev(1, memdev.Options{}), newDiscardDev(1, memdev.Options{})}
	q, err := filter.NewQuorum([]block.Device{kids[0], kids[1], kids[2]}, filter.QuorumOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []block.Device{filter.NewBlkverify(kids[0], kids[1]), q} {
		if _, ok := d.(block.Discarder); ok {
			t.Fatalf("%T is a block.Discarder", d)
		}
		wantErr(t, "queued discard", block.Do(d, &block.Req{Op: block.OpDiscard, Len: 4096}), block.ErrNotSupported)
	}
	for i, k := range kids {
		if len(k.calls()) != 0 {
			t.Fatalf("child %d received discards %v", i, k.calls())
		}
	}
}

// TestQueue runs block's queue conformance kit (RunQueue: its discard
// case compares queued discards with Do's on a twin) on every layer
// through block.NewQueue's generic queue, over children that are
// Discarders: raw, throttle, copy-on-read and mirror discard, blkverify
// and quorum refuse. raw-offset is a growing device; the others start at
// 2 MiB (sized children), which keeps the kit's span, and the test, short.
func TestQueue(t *testing.T) {
	const size = 2 << 20
	mk := func(n int64) *discardDev {
		d := newDiscardDev(512, memdev.Options{})
		d.Truncate(n)
		return d
	}
	// A mirror's two sides, for its Check: after the queued writes,
	// zeroings and discards, Complete hands over a target that reads
	// what the source reads (MR3).
	var sides sync.Map // *filter.Mirror -> [2]*memdev.Dev
	mirrorCheck := func(t *testing.T, d block.Device) {
		m := d.(*filter.Mirror)
		v, _ := sides.Load(m)
		s := v.([2]*memdev.Dev)
		tg, err := m.Complete()
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		testkit.MustEqual(t, s[1].Bytes(), s[0].Bytes(), "mirror target after Complete")
	}
	layers := []struct {
		name  string
		size  int64 // QueueConfig.Size: 0 for a device that starts empty
		build func(t *testing.T) block.Device
		check func(t *testing.T, d block.Device)
	}{
		{"raw-offset", 0, func(t *testing.T) block.Device {
			r, err := filter.NewRaw(mk(0), filter.RawOptions{Offset: 4096})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}, nil},
		{"raw-window", size, func(t *testing.T) block.Device {
			r, err := filter.NewRaw(mk(size+8192), filter.RawOptions{Offset: 4096, Size: size})
			if err != nil {
				t.Fatal(err)
			}
			return r
		}, nil},
		{"throttle", size, func(t *testing.T) block.Device {
			return filter.NewThrottle(mk(size), filter.ThrottleLimits{IOPSTotal: 1e7, BPSWrite: 1e11}, nil)
		}, nil},
		{"copy-on-read", size, func(t *testing.T) block.Device {
			top := &allocTop{Dev: memdev.New(memdev.Options{}), alloc: map[int64]bool{}}
			top.Truncate(size)
			src := memdev.New(memdev.Options{})
			src.Truncate(size)
			return filter.NewCopyOnRead(discardAllocTop{top}, src)
		}, nil},
		{"mirror", size, func(t *testing.T) block.Device {
			src, tgt := mk(size), memdev.New(memdev.Options{})
			m, err := filter.NewMirror(src, tgt, filter.MirrorOptions{Granularity: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			sides.Store(m, [2]*memdev.Dev{src.Dev, tgt})
			return m
		}, mirrorCheck},
		{"blkverify", size, func(t *testing.T) block.Device { return filter.NewBlkverify(mk(size), mk(size)) }, nil},
		{"quorum", size, func(t *testing.T) block.Device {
			q, err := filter.NewQuorum([]block.Device{mk(size), mk(size), mk(size)}, filter.QuorumOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return q
		}, nil},
	}
	for _, ly := range layers {
		t.Run(ly.name, func(t *testing.T) {
			t.Parallel()
			blocktest.RunQueue(t, func(t *testing.T) block.Device {
				d := ly.build(t)
				t.Cleanup(func() { d.Close() })
				return d
			}, blocktest.QueueConfig{Size: ly.size, Ops: 400, Check: ly.check})
		})
	}
}
