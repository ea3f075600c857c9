package cache

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// BenchmarkCache_Hit is the L2-hit path: Get of a cached table plus Put.
func BenchmarkCache_Hit(b *testing.B) {
	for _, tc := range []struct {
		name string
		hold bool // another pin holds it: served from the owned map
	}{{"ristretto", false}, {"owned", true}} {
		b.Run(tc.name, func(b *testing.B) {
			c := newCache(b, memdev.New(memdev.Options{}), Config{TableSize: 64 << 10, MaxBytes: 32 << 20})
			tb, err := c.Get(0x50000)
			if err != nil {
				b.Fatal(err)
			}
			if !tc.hold {
				c.Put(tb)
				c.settle()
			}
			b.ReportAllocs()
			for b.Loop() {
				t, err := c.Get(0x50000)
				if err != nil {
					b.Fatal(err)
				}
				c.Put(t)
			}
			if tc.hold {
				c.Put(tb)
			}
		})
	}
}

// BenchmarkCache_HitParallel: every goroutine hits its own cached table.
func BenchmarkCache_HitParallel(b *testing.B) {
	const ts = 64 << 10
	c := newCache(b, memdev.New(memdev.Options{}), Config{TableSize: ts, MaxBytes: 32 << 20})
	for i := range 64 {
		t, err := c.Get(int64(i) * ts)
		if err != nil {
			b.Fatal(err)
		}
		c.Put(t)
	}
	c.settle()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		off := int64(rand.IntN(64)) * ts
		for pb.Next() {
			t, err := c.Get(off)
			if err != nil {
				b.Fatal(err)
			}
			c.Put(t)
		}
	})
}

// BenchmarkCache_Miss: every Get reads the table from a memdev.
func BenchmarkCache_Miss(b *testing.B) {
	for _, ts := range []int{4 << 10, 64 << 10} {
		b.Run(fmt.Sprintf("table=%dK", ts>>10), func(b *testing.B) {
			c := newCache(b, memdev.New(memdev.Options{}), Config{TableSize: ts, MaxBytes: 2 * int64(ts)})
			b.SetBytes(int64(ts))
			b.ReportAllocs()
			off := int64(0)
			for b.Loop() {
				t, err := c.Get(off)
				if err != nil {
					b.Fatal(err)
				}
				c.Put(t)
				off += int64(ts) // never repeats: always a miss
			}
		})
	}
}

// BenchmarkCache_Mixed: random Gets over 64 MiB of 64 KiB L2 tables (1024
// tables; a 64 MiB L2 cache covers 512 GiB of guest at 64 KiB clusters),
// skewed so some tables are hot, 20% of them modified; a Flush every 256
// ops. Capacity 1 MiB (16 tables) vs 32 MiB (512 tables).
func BenchmarkCache_Mixed(b *testing.B) {
	const (
		ts      = 64 << 10
		nTables = 1024
	)
	for _, capBytes := range []int64{1 << 20, 32 << 20} {
		b.Run(fmt.Sprintf("cap=%dMiB", capBytes>>20), func(b *testing.B) {
			dev := memdev.New(memdev.Options{})
			if err := dev.Truncate(nTables * ts); err != nil {
				b.Fatal(err)
			}
			c := newCache(b, dev, Config{Name: "l2", TableSize: ts, MaxBytes: capBytes})
			rng := rand.New(rand.NewPCG(1, 2))
			zipf := rand.NewZipf(rng, 1.1, 4, nTables-1)
			op := func(n int) {
				off := int64(zipf.Uint64()) * ts
				t, err := c.Get(off)
				if err != nil {
					b.Fatal(err)
				}
				if rng.IntN(5) == 0 {
					t.Data[8*rng.IntN(ts/8)]++
					c.MarkDirty(t)
				}
				c.Put(t)
				if n%256 == 0 {
					// Flush, not Write: memdev keeps unflushed writes in a log.
					if err := c.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			for i := range 4 * nTables { // warm up: measure the steady state
				op(i + 1)
			}
			base := c.Metrics()
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n++
				op(n)
			}
			m := c.Metrics().Sub(base)
			b.ReportMetric(100*m.HitRatio(), "hit%")
			b.ReportMetric(float64(m.WriteBacks)/float64(n), "writebacks/op")
		})
	}
}

// BenchmarkCache_Discard measures killing a cached table in place (what
// Discard does, C1) against ristretto.Del, which does a blocking send into
// ristretto's set buffer.
func BenchmarkCache_Discard(b *testing.B) {
	const ts = 4 << 10
	setup := func(b *testing.B) *Cache {
		c := newCache(b, memdev.New(memdev.Options{}), Config{TableSize: ts, MaxBytes: 64 * ts})
		t, err := c.Get(0)
		if err != nil {
			b.Fatal(err)
		}
		c.Put(t)
		c.settle()
		return c
	}
	b.Run("epoch-kill", func(b *testing.B) {
		c := setup(b)
		b.ReportAllocs()
		for b.Loop() {
			c.Discard(0)
		}
	})
	b.Run("ristretto-Del", func(b *testing.B) {
		c := setup(b)
		b.ReportAllocs()
		for b.Loop() {
			c.rc.Del(c.key(0))
		}
	})
}

// BenchmarkCache_Write: write back 64 dirty 64 KiB tables, contiguous (one
// vectored write) vs scattered (concurrent writes), to a device that drops
// writes, so this is the cache's own cost (snapshot copies, batching).
func BenchmarkCache_Write(b *testing.B) {
	const ts = 64 << 10
	for _, stride := range []int64{1, 2} {
		b.Run(fmt.Sprintf("stride=%d", stride), func(b *testing.B) {
			c := newCache(b, nullDev{}, Config{TableSize: ts, MaxBytes: 128 * ts})
			tabs := make([]*Table, 64)
			for i := range tabs {
				t, err := c.Get(int64(i) * stride * ts)
				if err != nil {
					b.Fatal(err)
				}
				tabs[i] = t
			}
			b.SetBytes(64 * ts)
			b.ReportAllocs()
			for b.Loop() {
				for _, t := range tabs {
					c.MarkDirty(t)
				}
				if err := c.Write(); err != nil {
					b.Fatal(err)
				}
			}
			for _, t := range tabs {
				c.Put(t)
			}
		})
	}
}

// nullDev reads zeros and discards writes.
type nullDev struct{}

func (nullDev) Readv(off int64, bufs [][]byte) error {
	for _, b := range bufs {
		clear(b)
	}
	return nil
}
func (nullDev) Writev(int64, [][]byte) error                { return nil }
func (nullDev) WriteZeroes(int64, int64, block.Flags) error { return nil }
func (nullDev) Flush() error                                { return nil }
func (nullDev) Size() (int64, error)                        { return 1 << 40, nil }
func (nullDev) Truncate(int64) error                        { return nil }
func (nullDev) Caps() block.Caps                            { return block.Caps{Align: 1, MemAlign: 1} }
func (nullDev) Close() error                                { return nil }
