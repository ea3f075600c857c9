package memdev_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/blocktest"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// crash is blocktest's Config.Crash for a bare memdev: a power cut that
// loses every unflushed write.
func crash(t *testing.T, d block.Device) block.Device {
	return d.(*memdev.Dev).CrashClone(rand.New(rand.NewPCG(1, 2)), 0)
}

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    memdev.Options
	}{
		{"default", memdev.Options{}},
		{"align4k", memdev.Options{Align: 4096}},
		{"no-allocate", memdev.Options{ZeroFlags: block.MayUnmap, NoAllocate: true}},
		{"no-zero-flags", memdev.Options{NoAllocate: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := blocktest.NewStall()
			o := tc.o
			o.OnWrite = st.Hook
			blocktest.Run(t, func(t *testing.T) block.Device { return memdev.New(o) },
				blocktest.Config{Stall: st, Crash: crash})
		})
	}
}

// holder holds the first write that reaches OnWrite with length n until
// released.
type holder struct {
	n       int64
	armed   atomic.Bool
	held    chan struct{}
	release chan struct{}
}

func newHolder(n int64) *holder {
	h := &holder{n: n, held: make(chan struct{}), release: make(chan struct{})}
	h.armed.Store(true)
	return h
}

func (h *holder) hook(off, n int64) {
	if n == h.n && h.armed.CompareAndSwap(true, false) {
		close(h.held)
		<-h.release
	}
}

func done(t *testing.T, what string, fn func() error) {
	t.Helper()
	var err error
	if !testkit.Within(5*time.Second, func() { err = fn() }) {
		t.Fatalf("%s waited for a held, non-overlapping write (B1)", what)
	}
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// TestDisjointWritesDoNotWait is B1 for memdev: with one write held inside
// the device (its range locked), disjoint writes, including one that grows
// the device, zeroing, reads, Flush, Truncate and CrashClone complete; an
// overlapping write waits for it and lands after it. The crash clone taken
// meanwhile holds the completed writes and not the held one (it is not
// applied yet), and the held one is durable after the next Flush.
func TestDisjointWritesDoNotWait(t *testing.T) {
	h := newHolder(777)
	d := memdev.New(memdev.Options{OnWrite: h.hook})
	if err := block.WriteAt(d, bytes.Repeat([]byte{1}, 1<<16), 0); err != nil {
		t.Fatal(err)
	}
	heldData := bytes.Repeat([]byte{2}, 777)
	heldDone := make(chan error, 1)
	go func() { heldDone <- block.WriteAt(d, heldData, 1000) }()
	<-h.held

	done(t, "disjoint write", func() error { return block.WriteAt(d, bytes.Repeat([]byte{3}, 4096), 8192) })
	done(t, "adjacent write", func() error { return block.WriteAt(d, []byte{4}, 1777) })
	done(t, "growing write", func() error { return block.WriteAt(d, bytes.Repeat([]byte{5}, 4096), 1<<20) })
	done(t, "disjoint zeroing", func() error { return d.WriteZeroes(4096, 100, 0) })
	done(t, "disjoint NoWait zeroing", func() error { return d.WriteZeroes(4196, 100, block.Serialising|block.NoWait) })
	done(t, "disjoint read", func() error { return block.ReadAt(d, make([]byte, 500), 0) })
	done(t, "flush", d.Flush)
	var clone *memdev.Dev
	done(t, "crash clone", func() error { clone = d.CrashClone(rand.New(rand.NewPCG(1, 1)), 0); return nil })
	if err := d.WriteZeroes(1500, 10, block.Serialising|block.NoWait); !errors.Is(err, block.ErrBusy) {
		t.Fatalf("overlapping NoWait zeroing = %v, want ErrBusy", err)
	}
	overlap := make(chan error, 1)
	go func() { overlap <- block.WriteAt(d, bytes.Repeat([]byte{6}, 10), 1770) }()
	select {
	case err := <-overlap:
		t.Fatalf("overlapping write did not wait for the held one (err %v)", err)
	case <-time.After(20 * time.Millisecond):
	}

	close(h.release)
	if err := <-heldDone; err != nil {
		t.Fatal(err)
	}
	if err := <-overlap; err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{1}, 1<<16)
	copy(want[1000:], heldData)
	want[1777] = 4
	copy(want[1770:], bytes.Repeat([]byte{6}, 10))
	copy(want[8192:], bytes.Repeat([]byte{3}, 4096))
	clear(want[4096:4296])
	got := make([]byte, 1<<16)
	if err := block.ReadAt(d, got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("contents wrong after the held write")
	}
	// The clone was taken while the held write was not applied: it has
	// everything flushed before it and nothing of the held write.
	cw := bytes.Repeat([]byte{1}, 1<<16)
	cw[1777] = 4
	copy(cw[8192:], bytes.Repeat([]byte{3}, 4096))
	clear(cw[4096:4296])
	cb := clone.Bytes()
	if len(cb) != 1<<20+4096 || !bytes.Equal(cb[:1<<16], cw) {
		t.Fatal("crash clone taken during a held write is not the flushed state")
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if c := d.CrashClone(rand.New(rand.NewPCG(1, 1)), 0).Bytes(); !bytes.Equal(c[:1<<16], want) {
		t.Fatal("held write not durable after Flush")
	}
}

// TestCrashCloneConsistent: crash clones and flushes taken while writers
// run see every write whole or not at all (writes of one sector never
// tear), under -race.
func TestCrashCloneConsistent(t *testing.T) {
	d := memdev.New(memdev.Options{})
	const writers, slots = 4, 32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			buf := make([]byte, memdev.SectorSize)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				for k := range buf {
					buf[k] = byte(i%255 + 1)
				}
				off := int64((w*slots + i%slots) * memdev.SectorSize)
				if err := block.WriteAt(d, buf, off); err != nil {
					t.Error(err)
					return
				}
				if i%7 == 0 {
					if err := d.WriteZeroes(off, memdev.SectorSize, 0); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		if rng.IntN(3) == 0 {
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		for _, keep := range []float64{0, 0.5, 1} {
			b := d.CrashClone(rng, keep).Bytes()
			for s := 0; s+memdev.SectorSize <= len(b); s += memdev.SectorSize {
				sec := b[s : s+memdev.SectorSize]
				if !bytes.Equal(sec, bytes.Repeat(sec[:1], len(sec))) {
					t.Fatalf("keep=%v: sector %d of a crash clone holds part of a write", keep, s/memdev.SectorSize)
				}
			}
		}
	}
	close(stop)
	wg.Wait()
}

// TestReadvNoAlloc: a read allocates nothing (engine zero-allocation
// tests run over memdev).
func TestReadvNoAlloc(t *testing.T) {
	d := memdev.New(memdev.Options{})
	if err := d.Writev(0, [][]byte{make([]byte, 8192)}); err != nil {
		t.Fatal(err)
	}
	v := [][]byte{make([]byte, 4096)}
	if n := testing.AllocsPerRun(100, func() { d.Readv(4096, v) }); n != 0 {
		t.Fatalf("Readv: %v allocations", n)
	}
}
