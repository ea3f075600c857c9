package cache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
)

const ts4k = 4096

func newCache(t testing.TB, dev block.Device, cfg Config) *Cache {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "l2"
	}
	if cfg.TableSize == 0 {
		cfg.TableSize = ts4k
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 64 * int64(cfg.TableSize)
	}
	c, err := New(dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !c.closed.Load() {
			c.Close()
		}
	})
	return c
}

// pattern is the content of table off at version v.
func pattern(off int64, v byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(off>>12) ^ v ^ byte(i*7)
	}
	return b
}

func fillDev(t testing.TB, d block.Device, off int64, v byte, n int) {
	t.Helper()
	if err := block.WriteAt(d, pattern(off, v, n), off); err != nil {
		t.Fatal(err)
	}
}

// expectTable gets c's table at off and fails t with the message format
// and args unless the table holds pattern(off, v, ...), then unpins it.
func expectTable(t testing.TB, c *Cache, off int64, v byte, format string, args ...any) {
	t.Helper()
	tb, err := c.Get(off)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tb.Data, pattern(off, v, len(tb.Data))) {
		t.Fatalf(format, args...)
	}
	c.Put(tb)
}

func devBytes(t testing.TB, d block.Device, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := block.ReadAt(d, b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

// dirty gets off, overwrites it with pattern(off, v), marks it dirty and
// puts it.
func dirty(t testing.TB, c *Cache, off int64, v byte) {
	t.Helper()
	tb, err := c.Get(off)
	if err != nil {
		t.Fatal(err)
	}
	tb.Lock()
	copy(tb.Data, pattern(off, v, len(tb.Data)))
	tb.Unlock()
	c.MarkDirty(tb)
	c.Put(tb)
}

// settle waits until ristretto processed every Set and forgets the
// confirmed pending entries (C2), so tests see the steady state.
func (c *Cache) settle() {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	c.drainPending()
}

func TestCache_Get_HitMissLoad(t *testing.T) {
	type step struct {
		op       string // get, getempty, put-all, settle
		off      int64
		wantData byte // version expected in Data (255: zeros)
	}
	cases := []struct {
		name              string
		steps             []step
		wantReads         int64
		wantHits, wantMis int64
	}{
		{"miss loads", []step{{op: "get", off: 0x10000, wantData: 1}}, 1, 0, 1},
		{"pinned hit", []step{{op: "get", off: 0, wantData: 1}, {op: "get", off: 0, wantData: 1}}, 1, 1, 1},
		{"pending hit after put", []step{{op: "get", off: 0, wantData: 1}, {op: "put-all"}, {op: "get", off: 0, wantData: 1}}, 1, 1, 1},
		{"ristretto hit after settle", []step{{op: "get", off: 0, wantData: 1}, {op: "put-all"}, {op: "settle"}, {op: "get", off: 0, wantData: 1}}, 1, 1, 1},
		{"getempty reads nothing", []step{{op: "getempty", off: 0x2000, wantData: 255}}, 0, 0, 1},
		{"getempty of cached zeroes", []step{{op: "get", off: 0x2000, wantData: 1}, {op: "put-all"}, {op: "getempty", off: 0x2000, wantData: 255}}, 1, 1, 1},
		{"getempty not dirtied is dropped", []step{{op: "getempty", off: 0x3000, wantData: 255}, {op: "put-all"}, {op: "get", off: 0x3000, wantData: 1}}, 1, 0, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newRecDev()
			for off := int64(0); off < 0x20000; off += ts4k {
				fillDev(t, d, off, 1, ts4k)
			}
			c := newCache(t, d, Config{})
			var held []*Table
			for _, s := range tc.steps {
				switch s.op {
				case "get", "getempty":
					var tb *Table
					var err error
					if s.op == "get" {
						tb, err = c.Get(s.off)
					} else {
						tb, err = c.GetEmpty(s.off)
					}
					if err != nil {
						t.Fatal(err)
					}
					want := pattern(s.off, s.wantData, ts4k)
					if s.wantData == 255 {
						want = make([]byte, ts4k)
					}
					if tb.Off != s.off || !bytes.Equal(tb.Data, want) {
						t.Fatalf("%s 0x%x: wrong table contents", s.op, s.off)
					}
					if !block.IsAligned(tb.Data, block.DefaultMemAlign) {
						t.Fatalf("table memory not aligned")
					}
					held = append(held, tb)
				case "put-all":
					for _, tb := range held {
						c.Put(tb)
					}
					held = nil
				case "settle":
					c.settle()
				}
			}
			m := c.Metrics()
			if got := d.reads.Load(); got != tc.wantReads {
				t.Errorf("device reads = %d, want %d", got, tc.wantReads)
			}
			if m.Hits != tc.wantHits || m.Misses != tc.wantMis {
				t.Errorf("hits/misses = %d/%d, want %d/%d", m.Hits, m.Misses, tc.wantHits, tc.wantMis)
			}
			distinct := map[*Table]bool{}
			for _, tb := range held {
				distinct[tb] = true
			}
			if m.PinnedTables != int64(len(distinct)) {
				t.Errorf("pinned = %d, want %d", m.PinnedTables, len(distinct))
			}
			for _, tb := range held {
				c.Put(tb)
			}
		})
	}
}

func TestCache_New_Config(t *testing.T) {
	d := newRecDev()
	for _, cfg := range []Config{
		{TableSize: 100, MaxBytes: 1 << 20},
		{TableSize: 256, MaxBytes: 1 << 20},
		{TableSize: 4 << 20, MaxBytes: 1 << 30},
		{TableSize: 4096, MemAlign: 3},
	} {
		if _, err := New(d, cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
	c := newCache(t, d, Config{TableSize: 4096, MaxBytes: 1})
	if c.Capacity() != 2*4096 {
		t.Errorf("capacity = %d, want 2 tables", c.Capacity())
	}
}

func TestCache_Get_Misaligned(t *testing.T) {
	c := newCache(t, newRecDev(), Config{Name: "l2"})
	_, err := c.Get(0x50001)
	if !errors.Is(err, ErrMisaligned) || !strings.Contains(err.Error(), "cache l2: table at 0x50001") {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Get(-4096); !errors.Is(err, ErrMisaligned) {
		t.Fatalf("negative offset: %v", err)
	}
}

func TestCache_Get_SingleFlight(t *testing.T) {
	d := newRecDev()
	fillDev(t, d, 0x8000, 3, ts4k)
	d.beforeRead = func(int64) { time.Sleep(30 * time.Millisecond) }
	c := newCache(t, d, Config{})
	const n = 32
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		got   [n]*Table
		errs  [n]error
	)
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], errs[i] = c.Get(0x8000)
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i] != got[0] {
			t.Fatal("getters got different tables")
		}
	}
	if !bytes.Equal(got[0].Data, pattern(0x8000, 3, ts4k)) {
		t.Fatal("wrong contents")
	}
	if r := d.reads.Load(); r != 1 {
		t.Fatalf("device reads = %d, want 1", r)
	}
	for i := range n {
		c.Put(got[i])
	}
	if m := c.Metrics(); m.PinnedTables != 0 || m.OwnedTables != 0 {
		t.Fatalf("after puts: %v", m)
	}
}

func TestCache_Get_LoadError(t *testing.T) {
	d := newRecDev()
	boom := errors.New("boom")
	fail := true
	d.beforeRead = func(int64) { time.Sleep(10 * time.Millisecond) }
	c := newCache(t, &failReadDev{recDev: d, fail: &fail, err: boom}, Config{Name: "refcount"})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := c.Get(0x1000); !errors.Is(err, boom) || !strings.Contains(err.Error(), "cache refcount: table at 0x1000") {
				t.Errorf("err = %v", err)
			}
		})
	}
	wg.Wait()
	fail = false
	tb, err := c.Get(0x1000)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	if m := c.Metrics(); m.LoadErrors < 1 || m.PinnedTables != 0 {
		t.Fatalf("metrics: %v", m)
	}
}

type failReadDev struct {
	*recDev
	fail *bool
	err  error
}

func (f *failReadDev) Readv(off int64, bufs [][]byte) error {
	if *f.fail {
		f.recDev.beforeRead(off)
		return f.err
	}
	return f.recDev.Readv(off, bufs)
}

func TestCache_DirtySurvivesPressure(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes int64
		nDirty   int
	}{
		{"tiny 2 tables", 2 * ts4k, 12},
		{"16 tables", 16 * ts4k, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newRecDev()
			c := newCache(t, d, Config{MaxBytes: tc.maxBytes})
			dirtyOff := func(i int) int64 { return int64(i) * ts4k }
			for i := range tc.nDirty {
				dirty(t, c, dirtyOff(i), 9)
			}
			// Pressure: far more clean tables than the capacity, each read
			// several times so TinyLFU prefers them.
			base := int64(1 << 24)
			for round := range 4 {
				for i := range 500 {
					tb, err := c.Get(base + int64(i)*ts4k)
					if err != nil {
						t.Fatal(err)
					}
					c.Put(tb)
				}
				if round == 1 {
					c.rc.Wait()
				}
			}
			c.settle()
			for i := range tc.nDirty {
				expectTable(t, c, dirtyOff(i), 9, "dirty table %d lost its contents", i)
			}
			m := c.Metrics()
			t.Logf("%v", m)
			if m.Evictions+m.SetsRejected == 0 {
				t.Errorf("no ristretto pressure: %v", m)
			}
			if m.DirtyTables > int64(c.dirtyLimit) {
				t.Errorf("dirty tables %d above limit %d", m.DirtyTables, c.dirtyLimit)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			for i := range tc.nDirty {
				if !bytes.Equal(devBytes(t, d, dirtyOff(i), ts4k), pattern(dirtyOff(i), 9, ts4k)) {
					t.Fatalf("device table %d wrong after flush", i)
				}
			}
		})
	}
}

func TestCache_SetDependency_Order(t *testing.T) {
	const aOff, bOff = 0x0, 0x100000
	// dependent returns a device with two caches on it: b, named bName,
	// holding a dirty table at bOff, and a, configured by ac, depending on b.
	dependent := func(t *testing.T, ac Config, bName string) (d *recDev, a, b *Cache) {
		t.Helper()
		d = newRecDev()
		a = newCache(t, d, ac)
		b = newCache(t, d, Config{Name: bName})
		dirty(t, b, bOff, 1)
		if err := a.SetDependency(b); err != nil {
			t.Fatal(err)
		}
		return d, a, b
	}
	t.Run("write", func(t *testing.T) {
		d, a, _ := dependent(t, Config{Name: "l2"}, "refcount")
		dirty(t, a, aOff, 1)
		d.expectOps(t, "Write", a.Write, "write 0x100000", "flush", "write 0x0")
		// The dependency is satisfied; the next write-back needs no flush.
		dirty(t, a, aOff, 2)
		d.expectOps(t, "second write", a.Write, "write 0x0")
	})
	t.Run("eviction", func(t *testing.T) {
		d, a, _ := dependent(t, Config{Name: "l2", MaxBytes: 2 * ts4k}, "refcount") // dirty limit 4
		for i := range 5 {
			dirty(t, a, int64(i)*ts4k, 1)
		}
		d.reset()
		tb, err := a.Get(0x80000) // over the dirty limit: evicts, honouring b
		if err != nil {
			t.Fatal(err)
		}
		a.Put(tb)
		ops := d.ops()
		if len(ops) < 3 || ops[0] != "write 0x100000" || ops[1] != "flush" || !strings.HasPrefix(ops[2], "write 0x") {
			t.Fatalf("eviction ops = %q", ops)
		}
		if m := a.Metrics(); m.EvictionWriteBacks == 0 || m.DepFlushes != 1 {
			t.Fatalf("metrics: %v", m)
		}
	})
	t.Run("chain and replace", func(t *testing.T) {
		d, a, b := dependent(t, Config{Name: "a"}, "b")
		x := newCache(t, d, Config{Name: "x"})
		dirty(t, a, aOff, 1)
		// x depends on a: QEMU flushes a's own dependency (b) first.
		d.expectOps(t, "SetDependency(a)", func() error { return x.SetDependency(a) }, "write 0x100000", "flush")
		// Replacing x's dependency a by b flushes a first.
		d.expectOps(t, "replace", func() error { return x.SetDependency(b) }, "write 0x0", "flush")
		if err := x.SetDependency(x); !errors.Is(err, ErrCycle) {
			t.Fatalf("self dependency: %v", err)
		}
	})
	t.Run("dependency error keeps dirty", func(t *testing.T) {
		d, a, _ := dependent(t, Config{Name: "l2"}, "refcount")
		dirty(t, a, aOff, 1)
		boom := errors.New("flush failed")
		d.beforeFlush = func() error { return boom }
		if err := a.Write(); !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
		if a.Metrics().DirtyTables != 1 {
			t.Fatal("a's table not dirty after failed dependency flush")
		}
		d.beforeFlush = nil
		d.expectOps(t, "retry", a.Write, "flush", "write 0x0")
	})
}

func TestCache_DependsOnFlush(t *testing.T) {
	d := newRecDev()
	c := newCache(t, d, Config{})
	dirty(t, c, 0x3000, 1)
	dirty(t, c, 0x4000, 1)
	c.DependsOnFlush()
	d.expectOps(t, "Write", c.Write, "flush", "write 0x3000", "write 0x4000")
	if m := c.Metrics(); m.WriteOps != 1 || m.WriteBacks != 2 {
		t.Fatalf("contiguous tables not batched: %v", m)
	}
	dirty(t, c, 0x3000, 2)
	d.expectOps(t, "Flush", c.Flush, "write 0x3000", "flush")
}

func TestCache_Discard(t *testing.T) {
	d := newRecDev()
	fillDev(t, d, 0x5000, 1, ts4k)
	fillDev(t, d, 0x6000, 1, ts4k)
	c := newCache(t, d, Config{})
	dirty(t, c, 0x5000, 2)
	c.Discard(0x5000)
	d.expectOps(t, "Flush after Discard", c.Flush, "flush")
	expectTable(t, c, 0x5000, 1, "discarded table not reloaded from the device")

	// A clean cached table: the device changes under it (cluster reused),
	// Discard must make the next Get reread.
	for _, settle := range []bool{false, true} {
		tb, err := c.Get(0x6000)
		if err != nil {
			t.Fatal(err)
		}
		c.Put(tb)
		if settle {
			c.settle()
		}
		v := byte(3)
		if settle {
			v = 4
		}
		fillDev(t, d, 0x6000, v, ts4k)
		c.Discard(0x6000)
		expectTable(t, c, 0x6000, v, "settle=%v: stale table served after Discard", settle)
	}

	// Discard of a pinned dirty table: MarkDirty afterwards is ignored.
	tb, err := c.Get(0x7000)
	if err != nil {
		t.Fatal(err)
	}
	c.MarkDirty(tb)
	c.Discard(0x7000)
	c.MarkDirty(tb)
	c.Put(tb)
	if m := c.Metrics(); m.DirtyTables != 0 || m.PinnedTables != 0 || m.OwnedTables != 0 {
		t.Fatalf("after discard: %v", m)
	}
}

func TestCache_Write_ErrorKeepsDirty(t *testing.T) {
	d := newRecDev()
	c := newCache(t, d, Config{Name: "l2"})
	boom := errors.New("EIO")
	d.beforeWrite = func(off int64) error {
		if off == 0x50000 {
			return boom
		}
		return nil
	}
	dirty(t, c, 0x50000, 1)
	dirty(t, c, 0x70000, 1)
	err := c.Write()
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "cache l2: table at 0x50000") {
		t.Fatalf("err = %v", err)
	}
	if m := c.Metrics(); m.DirtyTables != 1 || m.WriteErrors != 1 || m.WriteBacks != 1 {
		t.Fatalf("metrics: %v", m)
	}
	if err := c.Flush(); !errors.Is(err, boom) {
		t.Fatalf("flush err = %v", err)
	}
	d.beforeWrite = nil
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(devBytes(t, d, 0x50000, ts4k), pattern(0x50000, 1, ts4k)) {
		t.Fatal("table not written after retry")
	}
	if c.Metrics().DirtyTables != 0 {
		t.Fatal("still dirty")
	}

	// Before (the overlap check) vetoes a write-back the same way.
	veto := errors.New("overlaps active L1")
	c2 := newCache(t, d, Config{Name: "l2", Before: func(off int64, data []byte) error {
		if len(data) != ts4k {
			t.Errorf("Before got %d bytes", len(data))
		}
		if off == 0x90000 {
			return veto
		}
		return nil
	}})
	dirty(t, c2, 0x90000, 1)
	dirty(t, c2, 0xa0000, 1)
	if err := c2.Write(); !errors.Is(err, veto) || !strings.Contains(err.Error(), "table at 0x90000") {
		t.Fatalf("err = %v", err)
	}
	if c2.Metrics().DirtyTables != 1 {
		t.Fatal("vetoed table not dirty")
	}
}

func TestCache_ModifyDuringWriteBack(t *testing.T) {
	d := newRecDev()
	c := newCache(t, d, Config{})
	const off = 0xc000
	dirty(t, c, off, 1)
	started := make(chan struct{})
	release := make(chan struct{})
	d.beforeWrite = func(int64) error {
		close(started)
		<-release
		return nil
	}
	done := make(chan error)
	go func() { done <- c.Write() }()
	<-started
	// A concurrent Get during write-back returns the same table, no reload.
	reads := d.reads.Load()
	tb, err := c.Get(off)
	if err != nil {
		t.Fatal(err)
	}
	if d.reads.Load() != reads || !bytes.Equal(tb.Data, pattern(off, 1, ts4k)) {
		t.Fatal("table reloaded during write-back")
	}
	tb.Lock()
	copy(tb.Data, pattern(off, 2, ts4k))
	tb.Unlock()
	c.MarkDirty(tb)
	c.Put(tb)
	d.beforeWrite = nil
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(devBytes(t, d, off, ts4k), pattern(off, 1, ts4k)) {
		t.Fatal("write-back did not write its snapshot")
	}
	if c.Metrics().DirtyTables != 1 {
		t.Fatal("table modified during write-back is not dirty")
	}
	if err := c.Write(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(devBytes(t, d, off, ts4k), pattern(off, 2, ts4k)) {
		t.Fatal("second write-back missing")
	}
}

// TestCache_ModifyDuringWriteBack_Torn hammers one table with whole-table
// rewrites while write-backs run; every device write must be one version.
func TestCache_ModifyDuringWriteBack_Torn(t *testing.T) {
	d := newRecDev()
	c := newCache(t, d, Config{})
	const off = 0x10000
	var torn sync.Once
	d.onWriteData = func(o int64, bufs [][]byte) {
		for _, b := range bufs {
			for i := range b {
				if b[i] != b[0] {
					torn.Do(func() { t.Errorf("torn write at 0x%x", o) })
					return
				}
			}
		}
	}
	tb, err := c.Get(off)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.Write(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var last byte
	for v := range 2000 {
		last = byte(v)
		tb.Lock()
		for i := range tb.Data {
			tb.Data[i] = last
		}
		c.MarkDirty(tb) // allowed under Table.Lock (C9)
		tb.Unlock()
	}
	close(stop)
	wg.Wait()
	c.Put(tb)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := devBytes(t, d, off, ts4k); !bytes.Equal(got, bytes.Repeat([]byte{last}, ts4k)) {
		t.Fatalf("device has version %d, want %d", got[0], last)
	}
}

// TestCache_CleanInterval drives the clean ticks itself (the ticker is
// set far beyond the test) so that what counts as "in use" does not depend
// on the scheduler: a loaded 2-core CI machine once slept the test's
// goroutine past a 20 ms tick and the table it kept using was dropped.
func TestCache_CleanInterval(t *testing.T) {
	d := newRecDev()
	c := newCache(t, d, Config{CleanInterval: time.Hour})
	for i := range 4 {
		tb, err := c.Get(int64(i) * ts4k)
		if err != nil {
			t.Fatal(err)
		}
		c.Put(tb)
	}
	dirty(t, c, 0x40000, 1)       // dirty: never dropped
	pinned, err := c.Get(0x50000) // pinned: never dropped
	if err != nil {
		t.Fatal(err)
	}
	c.settle()
	c.cleanUnused() // every table was used in this tick: none dropped
	if m := c.Metrics(); m.CleanDrops != 0 {
		t.Fatalf("first tick dropped %d tables used in it", m.CleanDrops)
	}
	tb, err := c.Get(0) // table 0 used again in the next tick
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	c.settle()
	c.cleanUnused()
	m := c.Metrics()
	if m.CleanDrops != 3 {
		t.Fatalf("clean drops = %d, want 3 (tables 1-3)", m.CleanDrops)
	}
	reads := d.reads.Load()
	tb, err = c.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	if d.reads.Load() != reads {
		t.Error("table in use was dropped")
	}
	tb, err = c.Get(ts4k)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	if d.reads.Load() != reads+1 {
		t.Error("unused table was not dropped")
	}
	if m.DirtyTables != 1 || m.PinnedTables != 1 {
		t.Errorf("owned tables dropped: %v", m)
	}
	c.Put(pinned)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCache_CleanIntervalTicks checks the ticker itself runs the cleaning:
// unused clean tables go, owned ones stay, whatever the timing.
func TestCache_CleanIntervalTicks(t *testing.T) {
	d := newRecDev()
	c := newCache(t, d, Config{CleanInterval: time.Millisecond})
	for i := range 4 {
		tb, err := c.Get(int64(i) * ts4k)
		if err != nil {
			t.Fatal(err)
		}
		c.Put(tb)
	}
	dirty(t, c, 0x40000, 1)
	deadline := time.Now().Add(10 * time.Second)
	for c.Metrics().CleanDrops < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	m := c.Metrics()
	if m.CleanDrops < 4 {
		t.Fatalf("clean drops = %d after 10 s of 1 ms ticks, want 4", m.CleanDrops)
	}
	if m.DirtyTables != 1 {
		t.Errorf("dirty table dropped: %v", m)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCache_Invalidate(t *testing.T) {
	d := newRecDev()
	fillDev(t, d, 0, 1, ts4k)
	c := newCache(t, d, Config{})
	tb, err := c.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	dirty(t, c, 0x1000, 5)
	fillDev(t, d, 0, 2, ts4k) // a repair rewrote it
	c.Invalidate()
	expectTable(t, c, 0, 2, "clean table survived Invalidate")
	expectTable(t, c, 0x1000, 5, "dirty table lost by Invalidate")
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	// After write-back the formerly dirty table is an ordinary clean one.
	c.settle()
	reads := d.reads.Load()
	tb, err = c.Get(0x1000)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	if d.reads.Load() != reads {
		t.Error("written-back table not cached")
	}
}

func TestCache_Close(t *testing.T) {
	c := newCache(t, newRecDev(), Config{CleanInterval: time.Millisecond})
	tb, err := c.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Put(tb) // allowed after Close
	if _, err := c.Get(0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := c.Write(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCache_HitPath_NoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("race detector allocates")
	}
	d := newRecDev()
	c := newCache(t, d, Config{})
	tb, err := c.Get(0x2000)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	c.settle()
	for _, tc := range []struct {
		name string
		hold bool
	}{{"ristretto hit", false}, {"owned hit", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.hold {
				h, err := c.Get(0x2000)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Put(h)
			}
			allocs := testing.AllocsPerRun(2000, func() {
				tb, err := c.Get(0x2000)
				if err != nil {
					panic(err)
				}
				c.Put(tb)
			})
			if allocs != 0 {
				t.Fatalf("hit path allocs = %v, want 0", allocs)
			}
		})
	}
	if r := d.reads.Load(); r != 1 {
		t.Fatalf("device reads = %d", r)
	}
}

func Example() {
	dev := newRecDev()
	c, _ := New(dev, Config{Name: "l2", TableSize: 64 << 10, MaxBytes: 1 << 20})
	defer c.Close()
	t, _ := c.Get(0x50000)
	t.Data[7] = 1 // modify an entry (big-endian on disk)
	c.MarkDirty(t)
	c.Put(t)
	fmt.Println(c.Flush(), c.Metrics().DirtyTables)
	// Output: <nil> 0
}

func TestCache_Put_Misuse(t *testing.T) {
	d := newRecDev()
	a := newCache(t, d, Config{Name: "l2"})
	b := newCache(t, d, Config{Name: "refcount"})
	tb, err := a.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	mustPanic("Put into another cache", func() { b.Put(tb) })
	mustPanic("MarkDirty in another cache", func() { b.MarkDirty(tb) })
	a.Put(tb)
	mustPanic("second Put", func() { a.Put(tb) })
	mustPanic("MarkDirty unpinned", func() { a.MarkDirty(tb) })
	a.Put(nil) // no-op
}

// TestPeek: Peek returns a cached table pinned and nil for one that is
// not cached, without reading the device (no load) or writing anything.
func TestPeek(t *testing.T) {
	dev := newRecDev()
	fillDev(t, dev, 0, 1, ts4k)
	fillDev(t, dev, ts4k, 2, ts4k)
	c := newCache(t, dev, Config{})
	if tb := c.Peek(0); tb != nil {
		t.Fatal("Peek found a table never loaded")
	}
	if m := c.Metrics(); m.Loads != 0 {
		t.Fatalf("Peek loaded: %+v", m)
	}
	tb, err := c.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	c.Put(tb)
	tb = c.Peek(0)
	if tb == nil {
		t.Fatal("Peek missed a cached table")
	}
	if !bytes.Equal(tb.Data, pattern(0, 1, ts4k)) {
		t.Fatal("Peek's table holds other bytes")
	}
	c.Put(tb)
	if tb := c.Peek(ts4k); tb != nil {
		t.Fatal("Peek found the other table")
	}
	if m := c.Metrics(); m.Loads != 1 {
		t.Fatalf("%d loads, want the one Get made", m.Loads)
	}
}
