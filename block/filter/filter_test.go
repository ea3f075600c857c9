package filter_test

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

func TestRaw_Window(t *testing.T) {
	child := memdev.New(memdev.Options{})
	block.WriteAt(child, []byte("0123456789abcdef"), 0)
	r, err := filter.NewRaw(child, filter.RawOptions{Offset: 4, Size: 8})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Size(); n != 8 {
		t.Fatalf("Size = %d", n)
	}
	cases := []struct {
		name    string
		op      func() error
		wantErr error
	}{
		{"write-inside", func() error { return block.WriteAt(r, []byte("XY"), 6) }, nil},
		{"write-past", func() error { return block.WriteAt(r, []byte("XYZ"), 6) }, block.ErrRange},
		{"zero-past", func() error { return r.WriteZeroes(4, 8, 0) }, block.ErrRange},
		{"truncate-fixed", func() error { return r.Truncate(100) }, block.ErrNotSupported},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.op(); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
		})
	}
	// A read straddling the end zero-fills past it (B2), even though the
	// child holds "cdef" there.
	got := make([]byte, 6)
	if err := block.ReadAt(r, got, 4); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, []byte("89XY\x00\x00"), "straddling read")
}

// TestRaw_FixedEmptyWindow: a window fixed at size 0 (QEMU's size=0) is
// an empty disk: no write reaches the child, which keeps its size.
func TestRaw_FixedEmptyWindow(t *testing.T) {
	child := memdev.New(memdev.Options{})
	block.WriteAt(child, []byte("0123456789abcdef"), 0)
	r, err := filter.NewRaw(child, filter.RawOptions{Offset: 4, Fixed: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.Size(); n != 0 {
		t.Fatalf("Size = %d, want 0", n)
	}
	if err := block.WriteAt(r, []byte("XY"), 0); !errors.Is(err, block.ErrRange) {
		t.Fatalf("write: %v, want ErrRange", err)
	}
	if err := r.Truncate(8); !errors.Is(err, block.ErrNotSupported) {
		t.Fatalf("truncate: %v, want ErrNotSupported", err)
	}
	got := make([]byte, 16)
	block.ReadAt(child, got, 0)
	testkit.MustEqual(t, got, []byte("0123456789abcdef"), "child")
}

// TestBlkverify_CatchesCorruption: a byte changed behind blkverify's back
// on either side is reported with its offset.
func TestBlkverify_CatchesCorruption(t *testing.T) {
	for _, side := range []string{"test", "ref"} {
		t.Run(side, func(t *testing.T) {
			test, ref := memdev.New(memdev.Options{}), memdev.New(memdev.Options{})
			bv := filter.NewBlkverify(test, ref)
			defer bv.Close()
			data := randBytes(rand.New(rand.NewPCG(1, 2)), 64<<10)
			if err := block.WriteAt(bv, data, 0); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, len(data))
			if err := block.ReadAt(bv, buf, 0); err != nil {
				t.Fatalf("clean read: %v", err)
			}
			victim := block.Device(test)
			if side == "ref" {
				victim = ref
			}
			const bad = 12345
			block.WriteAt(victim, []byte{^data[bad]}, bad)
			// A vectored read, so the offset is computed across buffers.
			err := bv.Readv(0, [][]byte{buf[:10000], buf[10000:]})
			var me *filter.MismatchError
			if !errors.Is(err, filter.ErrMismatch) || !errors.As(err, &me) || me.Off != bad {
				t.Fatalf("err = %v, want a mismatch at %d", err, bad)
			}
			// Ranges without the corrupted byte still verify.
			if err := block.ReadAt(bv, buf[:4096], 16384); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func newQuorum(t *testing.T, n int, o filter.QuorumOptions) (*filter.Quorum, []*memdev.Dev, []*errordev.Dev) {
	t.Helper()
	mems := make([]*memdev.Dev, n)
	errs := make([]*errordev.Dev, n)
	kids := make([]block.Device, n)
	for i := range kids {
		mems[i] = memdev.New(memdev.Options{})
		mems[i].Truncate(1 << 20)
		errs[i] = errordev.New(mems[i], nil, errordev.Options{})
		kids[i] = errs[i]
	}
	q, err := filter.NewQuorum(kids, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q, mems, errs
}

// TestQuorum_SurvivesFailingChild: a child with a sticky EIO is reported
// and skipped; reads, writes and flushes go on with the other two.
func TestQuorum_SurvivesFailingChild(t *testing.T) {
	var mu sync.Mutex
	var events []filter.QuorumEvent
	q, mems, errs := newQuorum(t, 3, filter.QuorumOptions{Threshold: 2, OnEvent: func(e filter.QuorumEvent) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}})
	data := randBytes(rand.New(rand.NewPCG(3, 4)), 128<<10)
	if err := block.WriteAt(q, data, 0); err != nil {
		t.Fatal(err)
	}
	errs[1].SetInjector(errordev.OnIndexSticky(0, errordev.ErrInjectedEIO))
	if err := block.WriteAt(q, data[:4096], 512<<10); err != nil {
		t.Fatalf("write with one dead child: %v", err)
	}
	got := make([]byte, len(data))
	if err := block.ReadAt(q, got, 0); err != nil {
		t.Fatalf("read with one dead child: %v", err)
	}
	testkit.MustEqual(t, got, data, "quorum read")
	if err := q.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if q.M.ChildErrors.Load() != 3 || len(events) != 3 || events[0].Child != 1 || events[0].Kind != filter.ChildError {
		t.Fatalf("ChildErrors %d, events %+v", q.M.ChildErrors.Load(), events)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, mems[2]), testkit.ReadAll(t, mems[0]), "healthy child")
	// A second failure loses the quorum.
	errs[2].SetInjector(errordev.OnIndexSticky(0, errordev.ErrInjectedEIO))
	if err := block.WriteAt(q, data[:4096], 0); !errors.Is(err, filter.ErrQuorum) || !errors.Is(err, errordev.ErrInjected) {
		t.Fatalf("write with two dead children: %v", err)
	}
	if err := block.ReadAt(q, got[:4096], 0); !errors.Is(err, filter.ErrQuorum) {
		t.Fatalf("read with two dead children: %v", err)
	}
}

// TestQuorum_Vote: the majority wins and the minority is reported, and
// repaired only with rewrite-corrupted.
func TestQuorum_Vote(t *testing.T) {
	for _, rewrite := range []bool{false, true} {
		t.Run(map[bool]string{false: "report", true: "rewrite"}[rewrite], func(t *testing.T) {
			q, mems, _ := newQuorum(t, 3, filter.QuorumOptions{Threshold: 2, Rewrite: rewrite})
			data := randBytes(rand.New(rand.NewPCG(5, 6)), 64<<10)
			if err := block.WriteAt(q, data, 4096); err != nil {
				t.Fatal(err)
			}
			block.WriteAt(mems[2], []byte("corrupt"), 10000) // behind its back
			got := make([]byte, len(data))
			for range 2 {
				if err := block.ReadAt(q, got, 4096); err != nil {
					t.Fatal(err)
				}
				testkit.MustEqual(t, got, data, "voted read")
			}
			wantMis, wantRew := int64(2), int64(0)
			if rewrite {
				wantMis, wantRew = 1, 1 // repaired by the first read
				testkit.MustEqual(t, testkit.ReadAll(t, mems[2]), testkit.ReadAll(t, mems[0]), "repaired child")
			}
			if q.M.Mismatches.Load() != wantMis || q.M.Rewrites.Load() != wantRew {
				t.Fatalf("mismatches %d rewrites %d, want %d %d", q.M.Mismatches.Load(), q.M.Rewrites.Load(), wantMis, wantRew)
			}
			// Three different versions: no majority.
			block.WriteAt(mems[1], []byte("other"), 10000)
			block.WriteAt(mems[2], []byte("third"), 10000)
			if err := block.ReadAt(q, got, 4096); !errors.Is(err, filter.ErrQuorum) {
				t.Fatalf("three-way split: %v", err)
			}
		})
	}
}

// allocImage adapts a *qcow2.Image for copy-on-read (as imgopen does).
type allocImage struct{ *qcow2.Image }

func (a allocImage) Allocated(off, n int64) (bool, int64, error) {
	st, err := a.BlockStatus(off, n)
	return st.Allocated, st.Len, err
}

// TestCopyOnRead_QCOW2Top: reading through copy-on-read makes a qcow2 top
// hold its backing file's data; the top then reads the same without its
// backing file, and passes qemu-img check.
func TestCopyOnRead_QCOW2Top(t *testing.T) {
	dir := testkit.Dir(t)
	base, top := filepath.Join(dir, "base.raw"), filepath.Join(dir, "top.qcow2")
	const size = 4 << 20
	r := rand.New(rand.NewPCG(testkit.Seed(t), 7))
	data := make([]byte, size)
	for off := 0; off < size; off += 256 << 10 {
		if r.IntN(3) > 0 { // leave some zero extents
			copy(data[off:], randBytes(r, 100<<10+r.IntN(150<<10)))
		}
	}
	bd, err := block.OpenOSFile(base, false)
	if err != nil {
		// OpenOSFile does not create; make the file first.
		f, cerr := createFile(base)
		if cerr != nil {
			t.Fatal(cerr)
		}
		f.Close()
		if bd, err = block.OpenOSFile(base, false); err != nil {
			t.Fatal(err)
		}
	}
	block.WriteAt(bd, data, 0)
	bd.Close()
	if err := qcow2.Create(top, qcow2.CreateOptions{BackingFile: base, BackingFormat: "raw", ClusterSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	im, err := qcow2.Open(top, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// One guest write first: copy-on-read must not overwrite it (FL5).
	block.WriteAt(im, []byte("guest"), 70000)
	copy(data[70000:], "guest")
	cor := filter.NewCopyOnRead(allocImage{im}, nil)
	// Unaligned, overlapping, concurrent reads.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 300_001)
			for off := int64(g * 1000); off < size; off += 250_000 {
				n := min(int64(len(buf)), size-off)
				if err := block.ReadAt(cor, buf[:n], off); err != nil {
					t.Error(err)
					return
				}
				if string(buf[:n]) != string(data[off:off+n]) {
					t.Errorf("read at %d differs from the backing data", off)
					return
				}
			}
		})
	}
	wg.Wait()
	if cor.M.CopiedBytes.Load() == 0 {
		t.Fatal("nothing was copied")
	}
	for off := int64(0); off < size; {
		st, err := im.BlockStatus(off, size-off)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Allocated {
			t.Fatalf("[%d, +%d) still unallocated in the top", off, st.Len)
		}
		off += st.Len
	}
	if err := cor.Close(); err != nil {
		t.Fatal(err)
	}
	imgcheck.File(t, top, qcow2.Options{})
	alone, err := qcow2.Open(top, qcow2.Options{NoBacking: true, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer alone.Close()
	testkit.MustEqual(t, testkit.ReadAll(t, alone), data, "top without backing")
}

// TestCopyOnRead_SourceAndWrites: with a separate source, a guest write
// racing copy-on-read fills is never overwritten by source data (FL5).
func TestCopyOnRead_SourceAndWrites(t *testing.T) {
	const size = 1 << 20
	src := memdev.FromBytes(randBytes(rand.New(rand.NewPCG(8, 9)), size), memdev.Options{})
	top := newMemAlloc(size)
	cor := filter.NewCopyOnRead(top, src)
	defer cor.Close()
	want := testkit.ReadAll(t, src)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 10))
			buf := make([]byte, 8192)
			for range 200 {
				off := r.Int64N(size - 8192)
				if g%2 == 0 {
					p := randBytes(r, 100)
					mu.Lock()
					if err := block.WriteAt(cor, p, off); err != nil {
						t.Error(err)
					}
					copy(want[off:], p)
					mu.Unlock()
				} else if err := block.ReadAt(cor, buf, off); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	testkit.MustEqual(t, testkit.ReadAll(t, cor), want, "through copy-on-read")
	testkit.MustEqual(t, testkit.ReadAll(t, top.Dev), want, "top after full read")
}

// TestMirror_ConvergesUnderWrites: guest writers run while the background
// copy does; the mirror converges and the target equals the source.
func TestMirror_ConvergesUnderWrites(t *testing.T) {
	const size = 4 << 20
	seed := testkit.Seed(t)
	src := memdev.FromBytes(randBytes(rand.New(rand.NewPCG(seed, 1)), size), memdev.Options{})
	// Hold the copy of the first chunk until the writers have had a head
	// start, so writes land both in not-yet-copied chunks (deferred to the
	// copier) and in copied ones (sent to both). The timer only schedules;
	// nothing asserts on time.
	gate := make(chan struct{})
	time.AfterFunc(30*time.Millisecond, func() { close(gate) })
	tgtMem := memdev.New(memdev.Options{NoAllocate: true, ZeroFlags: block.MayUnmap})
	tgt := errordev.New(tgtMem, nil, errordev.Options{LatencyFunc: func(op errordev.Op, off, n int64) time.Duration {
		if op == errordev.Write && off == 0 {
			<-gate
		}
		return 0
	}})
	m, err := filter.NewMirror(src, tgt, filter.MirrorOptions{Granularity: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(seed, uint64(g)+100))
			for i := range 150 {
				off := r.Int64N(size - 200<<10)
				var err error
				switch i % 5 {
				case 4:
					err = m.WriteZeroes(off&^4095, 8192, block.Allocate|block.MayUnmap)
				default:
					err = block.WriteAt(m, randBytes(r, 1+r.IntN(100<<10)), off)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := m.Wait(); err != nil {
		t.Fatal(err)
	}
	if !m.Converged() {
		t.Fatal("not converged after Wait")
	}
	t.Logf("copied %d chunks, deferred writes %d, target writes %d", m.M.ChunksCopied.Load(), m.M.DeferredWrites.Load(), m.M.TargetWrites.Load())
	if m.M.DeferredWrites.Load() == 0 || m.M.ChunksCopied.Load() < size/(64<<10) {
		t.Fatal("no guest write overlapped the background copy")
	}
	testkit.MustEqual(t, testkit.ReadAll(t, tgtMem)[:size], testkit.ReadAll(t, src), "target after Wait")
	// Converged writes go to both.
	block.WriteAt(m, []byte("after"), 12345)
	got, err := m.Complete()
	if err != nil {
		t.Fatal(err)
	}
	if err := block.WriteAt(m, []byte("x"), 0); !errors.Is(err, filter.ErrCompleted) {
		t.Fatalf("write after Complete: %v", err)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, got)[:size], testkit.ReadAll(t, src), "completed target")
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	got.Close()
}

// TestMirror_QCOW2Target mirrors into a real qcow2 image, which must then
// pass qemu-img check.
func TestMirror_QCOW2Target(t *testing.T) {
	const size = 4 << 20
	path := filepath.Join(testkit.Dir(t), "tgt.qcow2")
	if err := qcow2.Create(path, qcow2.CreateOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	tgt, err := qcow2.Open(path, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	copy(data[100000:], randBytes(rand.New(rand.NewPCG(1, 1)), 1<<20))
	src := memdev.FromBytes(data, memdev.Options{})
	m, err := filter.NewMirror(src, tgt, filter.MirrorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	block.WriteAt(m, []byte("guest"), 3<<20)
	done, err := m.Complete()
	if err != nil {
		t.Fatal(err)
	}
	want := testkit.ReadAll(t, src)
	if err := m.Close(); err != nil { // closes src, not the handed-over target
		t.Fatal(err)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, done), want, "qcow2 target")
	if err := done.Close(); err != nil {
		t.Fatal(err)
	}
	imgcheck.File(t, path, qcow2.Options{})
}

// fakeClock advances only when someone sleeps.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Sleep(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestThrottle_Schedule asserts the token buckets' computed delays on a
// fake clock, never wall-clock time.
func TestThrottle_Schedule(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name  string
		lim   filter.ThrottleLimits
		write bool
		n     int64
		want  []time.Duration // Delay for consecutive requests at one instant
	}{
		{"iops-total", filter.ThrottleLimits{IOPSTotal: 100, Burst: 10 * ms}, false, 4096, []time.Duration{0, 10 * ms, 20 * ms, 30 * ms}},
		{"iops-burst", filter.ThrottleLimits{IOPSTotal: 100, Burst: 30 * ms}, true, 4096, []time.Duration{0, 0, 0, 10 * ms}},
		{"iops-write-only", filter.ThrottleLimits{IOPSWrite: 100, Burst: 10 * ms}, false, 4096, []time.Duration{0, 0, 0}},
		{"bps-total", filter.ThrottleLimits{BPSTotal: 1 << 20, Burst: ms}, true, 256 << 10, []time.Duration{246093750, 496093750, 746093750}}, // (k*256K - 4K burst floor) / 1M,
		{"both-max", filter.ThrottleLimits{IOPSTotal: 1000, BPSRead: 4 << 20, Burst: ms}, false, 1 << 20, []time.Duration{249 * ms, 499 * ms}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{now: time.Unix(0, 0)}
			th := filter.NewThrottle(memdev.New(memdev.Options{}), tc.lim, clk)
			for i, want := range tc.want {
				got := th.Delay(tc.write, tc.n)
				if d := got - want; d < -time.Microsecond || d > time.Microsecond {
					t.Fatalf("request %d: delay %v, want %v", i, got, want)
				}
			}
		})
	}
	// Sequential requests on the fake clock: N requests at 100 IOPS take
	// (N-1)*10ms of fake time once the burst of one is spent.
	clk := &fakeClock{now: time.Unix(0, 0)}
	th := filter.NewThrottle(memdev.New(memdev.Options{}), filter.ThrottleLimits{IOPSTotal: 100, Burst: 10 * ms}, clk)
	buf := make([]byte, 512)
	for range 50 {
		if err := block.ReadAt(th, buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if el := clk.Now().Sub(time.Unix(0, 0)); el < 489*ms || el > 491*ms {
		t.Fatalf("50 requests at 100 IOPS took %v of fake time, want 490ms", el)
	}
	if th.M.Delayed.Load() != 49 {
		t.Fatalf("delayed %d, want 49", th.M.Delayed.Load())
	}
}
