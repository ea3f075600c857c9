package sched

import (
	"runtime"
	"sync/atomic"
	"testing"
)

func BenchmarkClusterLocks_Uncontended(b *testing.B) {
	var c ClusterLocks[int]
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		a, _, _ := c.TryAcquire(i, 1)
		c.Release(a)
		i++
	}
}

func BenchmarkClusterLocks_ConflictMiss(b *testing.B) {
	b.Run("idle", func(b *testing.B) {
		var c ClusterLocks[int]
		b.ReportAllocs()
		for b.Loop() {
			c.Conflict(5, 1)
		}
	})
	b.Run("busy-elsewhere", func(b *testing.B) {
		var c ClusterLocks[int]
		a, _, _ := c.TryAcquire(1000, 1)
		defer c.Release(a)
		b.ReportAllocs()
		for b.Loop() {
			c.Conflict(5, 1)
		}
	})
}

// BenchmarkClusterLocks_SeqWriters is the seed benchmark's pattern (make
// bench; QEMU iotest 046 tests the same dependency rule): 64 goroutines
// take consecutive 4 KiB pieces of 64 KiB clusters; the first to reach a
// new cluster allocates it, the other 15 wait on it and then write in
// place. One op is one 4 KiB piece.
func BenchmarkClusterLocks_SeqWriters(b *testing.B) {
	const piecesPerCluster = 16
	var c ClusterLocks[int]
	var next atomic.Uint64
	allocated := make([]atomic.Bool, b.N/piecesPerCluster+2)
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((64 + procs - 1) / procs)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			piece := next.Add(1) - 1
			cl := piece / piecesPerCluster
			if int(cl) >= len(allocated) {
				continue
			}
			for !allocated[cl].Load() { // the engine's L2 lookup
				a, _, blk := c.TryAcquire(cl, 1)
				if blk != nil {
					blk.Wait()
					continue // look the cluster up again
				}
				if !allocated[cl].Load() {
					runtime.Gosched() // stand-in for the COW/zero I/O the allocator awaits
					allocated[cl].Store(true)
				}
				c.Release(a)
			}
		}
	})
	b.StopTimer()
	m := c.Metrics()
	b.ReportMetric(float64(m.Acquisitions)/float64(b.N), "acq/op")
	b.ReportMetric(float64(m.Conflicts)/float64(b.N), "conflicts/op")
	b.ReportMetric(float64(m.Waits)/float64(b.N), "waits/op")
}
