//go:build linux

package uring

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

const benchSpan = 64 << 20 // preallocated file size the benchmarks write into

func benchFile(b *testing.B, be Backend) *File {
	return benchFileOpt(b, Options{Backend: be, Direct: true})
}

func benchFileOpt(b *testing.B, o Options) *File {
	f := openTemp(b, o)
	// Fill the file with data so writes overwrite written extents: an
	// extending or unwritten-extent O_DIRECT write on ext4 measures the
	// filesystem's extent conversion, not the I/O path.
	buf := block.AlignedBuf(1<<20, block.DefaultMemAlign)
	for i := range buf {
		buf[i] = byte(i)
	}
	for off := int64(0); off < benchSpan; off += int64(len(buf)) {
		if err := block.WriteAt(f, buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Flush(); err != nil {
		b.Fatal(err)
	}
	return f
}

// runQD issues b.N 4 KiB requests from qd goroutines, each with its own
// aligned buffer: goroutine g's i-th request is do at off(g, i).
func runQD(b *testing.B, qd int, off func(g, i int) int64, do func(off int64, v [][]byte) error) {
	var wg sync.WaitGroup
	per := b.N / qd
	for g := range qd {
		n := per
		if g == 0 {
			n += b.N % qd
		}
		wg.Go(func() {
			buf := block.AlignedBuf(4096, block.DefaultMemAlign)
			v := [][]byte{buf}
			for i := range n {
				if err := do(off(g, i), v); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// regionOff gives each of qd goroutines its own benchSpan/qd bytes, which
// it goes through 4 KiB at a time, round and round.
func regionOff(qd int) func(g, i int) int64 {
	region := int64(benchSpan / qd)
	return func(g, i int) int64 { return int64(g)*region + int64(i)*4096%region }
}

// BenchmarkWrite4K: 4 KiB O_DIRECT writes at QD1 and QD64 (64 goroutines),
// ring vs plain syscalls.
func BenchmarkWrite4K(b *testing.B) { bench4K(b, true) }

// bench4K runs 4 KiB O_DIRECT writes (or reads) at QD 1, 8 and 64 on both
// backends; for writes on the ring it reports the SQEs per enter.
func bench4K(b *testing.B, write bool) {
	for _, be := range []Backend{Ring, Threads} {
		for _, qd := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%v/qd%d", be, qd), func(b *testing.B) {
				f := benchFile(b, be)
				do := f.Readv
				if write {
					do = f.Writev
				}
				b.ReportAllocs()
				b.SetBytes(4096)
				before := f.Metrics()
				b.ResetTimer()
				runQD(b, qd, regionOff(qd), do)
				b.StopTimer()
				if write && be == Ring {
					m := f.Metrics().Sub(before)
					b.ReportMetric(m.SQEsPerEnter(), "sqes/enter")
				}
			})
		}
	}
}

// BenchmarkWrite4KHybrid: Options.Hybrid (plain pwrite when the ring is
// idle) at QD1 and QD64.
func BenchmarkWrite4KHybrid(b *testing.B) {
	for _, qd := range []int{1, 64} {
		b.Run(fmt.Sprintf("qd%d", qd), func(b *testing.B) {
			f := benchFileOpt(b, Options{Backend: Ring, Direct: true, Hybrid: true})
			b.ReportAllocs()
			b.SetBytes(4096)
			b.ResetTimer()
			runQD(b, qd, regionOff(qd), f.Writev)
		})
	}
}

// BenchmarkRead4K: the read side, same shape.
func BenchmarkRead4K(b *testing.B) { bench4K(b, false) }

// BenchmarkFallocate64K: fallocate(ZERO_RANGE) of a 64 KiB cluster through
// the ring vs a direct unix.Fallocate syscall.
func BenchmarkFallocate64K(b *testing.B) {
	b.Run("ring", func(b *testing.B) {
		fallocate64K(b, Ring, func(f *File, off int64) error { return f.WriteZeroes(off, 64<<10, block.Allocate) })
	})
	b.Run("ring-qd64", func(b *testing.B) {
		f := benchFile(b, Ring)
		b.ReportAllocs()
		b.SetBytes(64 << 10)
		var next atomic.Int64
		b.SetParallelism(32) // 64 goroutines on 2 CPUs
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				off := (next.Add(1) * 64 << 10) % benchSpan
				if err := f.WriteZeroes(off, 64<<10, block.Allocate); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("syscall", func(b *testing.B) {
		fallocate64K(b, Threads, func(f *File, off int64) error {
			return unix.Fallocate(f.Fd(), unix.FALLOC_FL_ZERO_RANGE, off, 64<<10)
		})
	})
}

// fallocate64K runs zero on successive 64 KiB clusters of a benchFile of
// backend be, one at a time.
func fallocate64K(b *testing.B, be Backend, zero func(f *File, off int64) error) {
	f := benchFile(b, be)
	b.ReportAllocs()
	b.SetBytes(64 << 10)
	var off int64
	for b.Loop() {
		if err := zero(f, off); err != nil {
			b.Fatal(err)
		}
		off = (off + 64<<10) % benchSpan
	}
}

// BenchmarkZeroThenWrite: zero a 64 KiB cluster then write 4 KiB into it,
// linked on the ring vs two syscalls.
func BenchmarkZeroThenWrite(b *testing.B) {
	for _, be := range []Backend{Ring, Threads} {
		b.Run(be.String(), func(b *testing.B) {
			f := benchFile(b, be)
			buf := block.AlignedBuf(4096, block.DefaultMemAlign)
			v := [][]byte{buf}
			b.ReportAllocs()
			b.SetBytes(4096)
			var off int64
			for b.Loop() {
				if err := f.ZeroThenWritev(off, 64<<10, block.Allocate, off+4096, v); err != nil {
					b.Fatal(err)
				}
				off = (off + 64<<10) % benchSpan
			}
		})
	}
}

// BenchmarkReadCached4K: buffered 4 KiB reads served from the page cache.
// The device is out of the picture, so this measures the submission and
// completion protocol itself (CPU per request).
func BenchmarkReadCached4K(b *testing.B) {
	for _, be := range []Backend{Ring, Threads} {
		for _, qd := range []int{1, 8, 64} {
			b.Run(fmt.Sprintf("%v/qd%d", be, qd), func(b *testing.B) {
				f := openTemp(b, Options{Backend: be})
				const span = 4 << 20
				if err := block.WriteAt(f, make([]byte, span), 0); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.SetBytes(4096)
				before := f.Metrics()
				b.ResetTimer()
				// Goroutine g starts at block g and strides 64 blocks.
				off := func(g, i int) int64 { return (int64(g)*4096 + int64(i)*64*4096) % span }
				runQD(b, qd, off, f.Readv)
				b.StopTimer()
				if be == Ring {
					b.ReportMetric(f.Metrics().Sub(before).SQEsPerEnter(), "sqes/enter")
				}
			})
		}
	}
}
