package qcow2

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// Benchmarks of the cache (issue 5) and the seed (issue 6). Compare runs
// with `go test ./qcow2 -run '^$' -bench 'Seed|Random4K|L2Hit' -count 5 |
// benchstat -`.

// --- Issue 5: L2 cache ---------------------------------------------------

// random4KSpread pre-writes one cluster in each of 4 slices (4 KiB L2
// cache entries) of every other 512 MiB region of a 1 TiB image: 2048
// allocated clusters whose L2 entries lie in 2048 distinct slices (8 MiB
// of slices: a 1 MiB L2 cache misses, a 32 MiB one holds them all).
func random4KSpread(cs int64) []int64 {
	const regions = 1024 // 1 TiB / 512 MiB (64 KiB clusters: 8192 entries per L2)
	var offs []int64
	region := cs * (cs / 8) // guest bytes per L2 table
	slice := cs * 512       // guest bytes per 4 KiB slice
	for r := int64(0); r < regions; r += 2 {
		for s := int64(0); s < 4; s++ {
			offs = append(offs, r*region+s*4*slice+cs*(r%7))
		}
	}
	return offs
}

// BenchmarkRandom4K: random 4 KiB reads of allocated clusters and 4 KiB
// overwrites of them over a 1 TiB sparse image on a real file (io_uring,
// O_DIRECT), with a 1 MiB and a 32 MiB L2 cache, at queue depth 1 and 32.
func BenchmarkRandom4K(b *testing.B) {
	const cs = 64 << 10
	p := filepath.Join(b.TempDir(), "sparse.qcow2")
	if err := Create(p, CreateOptions{Size: 1 << 40, ClusterSize: cs}); err != nil {
		b.Fatal(err)
	}
	offs := random4KSpread(cs)
	{
		im, err := Open(p, Options{Opener: uringOpener()})
		if err != nil {
			b.Fatal(err)
		}
		buf := block.AlignedBuf(cs, 4096)
		fillPiece(buf, 1)
		for _, off := range offs {
			if _, err := im.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := im.Close(); err != nil {
			b.Fatal(err)
		}
	}
	for _, l2 := range []int64{1 << 20, 32 << 20} {
		im, err := Open(p, Options{Opener: uringOpener(), L2CacheSize: l2, L2CacheEntrySize: 4096})
		if err != nil {
			b.Fatal(err)
		}
		for _, write := range []bool{false, true} {
			for _, depth := range []int{1, 32} {
				name := fmt.Sprintf("l2=%dM/%s/qd%d", l2>>20, map[bool]string{false: "read", true: "write"}[write], depth)
				b.Run(name, func(b *testing.B) {
					b.ReportAllocs()
					b.SetBytes(4096)
					var seed atomic.Uint64
					b.SetParallelism(depth)
					m0 := im.Metrics()
					if depth == 1 {
						random4K(b, im, offs, write, 1, b.N)
					} else {
						// RunParallel starts GOMAXPROCS*depth goroutines.
						b.RunParallel(func(pb *testing.PB) {
							s := seed.Add(1)
							r := rand.New(rand.NewPCG(s, s))
							buf := block.AlignedBuf(4096, 4096)
							fillPiece(buf, int64(s))
							for pb.Next() {
								if err := random4KOp(im, r, offs, buf, write); err != nil {
									b.Error(err)
									return
								}
							}
						})
					}
					d := im.Metrics().Sub(m0)
					if tot := d.L2Hits + d.L2Misses; tot > 0 {
						b.ReportMetric(float64(d.L2Misses)/float64(tot)*100, "%L2miss")
					}
				})
			}
		}
		if err := im.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func random4K(b *testing.B, im *Image, offs []int64, write bool, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, seed))
	buf := block.AlignedBuf(4096, 4096)
	fillPiece(buf, 7)
	b.ResetTimer()
	for i := 0; i < n; i++ {
		if err := random4KOp(im, r, offs, buf, write); err != nil {
			b.Fatal(err)
		}
	}
}

// random4KOp is one request of BenchmarkRandom4K: a 4 KiB read or write
// of buf at a random 4 KiB block of a random cluster of offs.
func random4KOp(im *Image, r *rand.Rand, offs []int64, buf []byte, write bool) error {
	off := offs[r.IntN(len(offs))] + int64(r.IntN(16))*4096
	var err error
	if write {
		_, err = im.WriteAt(buf, off)
	} else {
		_, err = im.ReadAt(buf, off)
	}
	return err
}

// flatDev is a minimal in-memory device that allocates nothing per
// request (memdev copies every write into its crash log), so that
// allocation tests see only the engine's allocations.
type flatDev struct {
	mu sync.RWMutex
	b  []byte
}

func (d *flatDev) Readv(off int64, bufs [][]byte) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, p := range bufs {
		clear(p)
		if off < int64(len(d.b)) {
			copy(p, d.b[off:])
		}
		off += int64(len(p))
	}
	return nil
}

func (d *flatDev) Writev(off int64, bufs [][]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	end := off + block.VecLen(bufs)
	if end > int64(len(d.b)) {
		d.b = append(d.b, make([]byte, end-int64(len(d.b)))...)
	}
	for _, p := range bufs {
		off += int64(copy(d.b[off:], p))
	}
	return nil
}

func (d *flatDev) WriteZeroes(off, n int64, flags block.Flags) error {
	if flags&block.Allocate != 0 {
		return block.ErrNotSupported
	}
	var v [1][]byte
	v[0] = make([]byte, n)
	return d.Writev(off, v[:])
}

func (d *flatDev) Flush() error { return nil }
func (d *flatDev) Size() (int64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return int64(len(d.b)), nil
}

func (d *flatDev) Truncate(size int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if size <= int64(len(d.b)) {
		d.b = d.b[:size]
	} else {
		d.b = append(d.b, make([]byte, size-int64(len(d.b)))...)
	}
	return nil
}

func (d *flatDev) Caps() block.Caps { return block.Caps{Align: 1, MemAlign: 1} }
func (d *flatDev) Close() error     { return nil }

// hotImage is an image on a flatDev with clusters 0..15 allocated and
// the L2 slice cached.
func hotImage(tb testing.TB) *Image {
	tb.Helper()
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 30}); err != nil {
		tb.Fatal(err)
	}
	im, err := OpenDevice(&flatDev{b: mem.Bytes()}, Options{PreallocSize: -1})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { im.Close() })
	buf := make([]byte, 16<<16)
	fillPiece(buf, 3)
	if _, err := im.WriteAt(buf, 0); err != nil {
		tb.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		tb.Fatal(err)
	}
	return im
}

// BenchmarkL2Hit is the L2 cache-hit path on an in-memory device
// (flatDev: no per-request device cost or allocation): a 4 KiB read of an
// allocated cluster through Image.Readv, and a 4 KiB overwrite.
func BenchmarkL2Hit(b *testing.B) {
	im := hotImage(b)
	for _, op := range hotOps(im) {
		if op.bench == "" {
			continue
		}
		b.Run(op.bench, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(4096)
			for i := 0; b.Loop(); i++ {
				if err := op.do(int64(i%256) * 4096); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// hotOp is a request on the hot path of a hotImage: do runs it on the
// allocated cluster at off.
type hotOp struct {
	bench string // BenchmarkL2Hit's name for it, "" if not benchmarked
	what  string // TestAllocs_HotPath's
	do    func(off int64) error
}

// hotOps are the hot-path requests on im: a read that hits the L2 cache,
// an overwrite of a cluster and a sub-cluster overwrite through WriteAt.
func hotOps(im *Image) []hotOp {
	buf := make([]byte, 4096)
	bufs := [][]byte{buf}
	return []hotOp{
		{"read", "L2-hit read", func(off int64) error { return im.Readv(off, bufs) }},
		{"overwrite", "overwrite", func(off int64) error { return im.Writev(off, bufs) }},
		{"", "sub-cluster overwrite (WriteAt)", func(off int64) error {
			_, err := im.WriteAt(buf[:512], off+512)
			return err
		}},
	}
}

// TestAllocs_HotPath: an overwrite of an allocated cluster and a read
// that hits the L2 cache allocate nothing (cache C10), on
// a device that allocates nothing itself.
func TestAllocs_HotPath(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	im := hotImage(t)
	i := 0
	for _, op := range hotOps(im) {
		if n := testing.AllocsPerRun(200, func() {
			i++
			if err := op.do(int64(i%256) * 4096); err != nil {
				t.Fatal(err)
			}
		}); n != 0 {
			t.Errorf("%s: %v allocs per run, want 0", op.what, n)
		}
	}
}

// --- Issue 6: the seed -----------------------------------------------------

// seedPrealloc are the three engine settings the seed compares.
var seedPrealloc = []struct {
	name string
	o    Options
}{
	{"prealloc=off", Options{Prealloc: "off"}},
	{"prealloc=on", Options{Prealloc: "on", PreallocSize: -1}},
	{"prealloc=on+ahead", Options{Prealloc: "on"}},
}

// writeStream benchmarks b.N requests of qemu-img bench's write stream:
// depth goroutines take request i from one counter and write reqSize
// bytes at first + i*step. The 1 GiB image (a real file, io_uring,
// O_DIRECT) is recreated, with the timer stopped, whenever the stream
// would wrap, so every request writes into fresh clusters as in
// scripts/simplebench/bench_write_req.py.
func writeStream(b *testing.B, cs int, o Options, reqSize, first, step int64, depth int) {
	const size = 1 << 30
	b.ReportAllocs()
	b.SetBytes(reqSize)
	per := (size - first - reqSize) / step // requests per image
	if first+per*step+reqSize > size {
		per--
	}
	per++
	p := filepath.Join(b.TempDir(), "seed.qcow2")
	o.Opener = uringOpener()
	bufs := make([][]byte, depth)
	for g := range bufs {
		bufs[g] = block.AlignedBuf(int(reqSize), 4096)
		fillPiece(bufs[g], int64(g))
	}
	var m Metrics
	b.StopTimer()
	for done := int64(0); done < int64(b.N); {
		if err := Create(p, CreateOptions{Size: size, ClusterSize: cs}); err != nil {
			b.Fatal(err)
		}
		im, err := Open(p, o)
		if err != nil {
			b.Fatal(err)
		}
		batch := min(per, int64(b.N)-done)
		var next atomic.Int64
		var wg sync.WaitGroup
		var failed atomic.Value
		b.StartTimer()
		for g := 0; g < depth; g++ {
			wg.Add(1)
			go func(buf []byte) {
				defer wg.Done()
				for {
					i := next.Add(1) - 1
					if i >= batch {
						return
					}
					if _, err := im.WriteAt(buf, first+i*step); err != nil {
						failed.Store(err)
						return
					}
				}
			}(bufs[g])
		}
		wg.Wait()
		b.StopTimer()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		m = addMetrics(m, im.Metrics())
		if err := im.Close(); err != nil {
			b.Fatal(err)
		}
		done += batch
	}
	n := float64(b.N)
	b.ReportMetric(float64(m.ZeroPadBytes)/n, "zeropad-B/op")
	b.ReportMetric(float64(m.Fallocates+m.Reservations)/n, "zeroings/op")
	b.ReportMetric(float64(m.EarlyWrites)/n, "early/op")
}

func addMetrics(a, b Metrics) Metrics {
	var z Metrics
	return a.Sub(z.Sub(b))
}

// BenchmarkSeed compares prealloc off, on and on+ahead on the seed
// workload (sequential 4 KiB writes over fresh 64 KiB clusters at depth
// 64) and QEMU's simplebench bench_write_req.py cases (one request per
// cluster, step = cluster size, depth 64).
func BenchmarkSeed(b *testing.B) {
	const ki, mi = 1 << 10, 1 << 20
	cases := []struct {
		name             string
		cs               int
		req, first, step int64
	}{
		{"seq4k-c64k", 64 * ki, 4 * ki, 0, 4 * ki},
		{"front-c1m", 1 * mi, 4 * ki, 0, 1 * mi},
		{"middle-c1m", 1 * mi, 4 * ki, 512 * ki, 1 * mi},
		{"cross-c1m", 1 * mi, 1 * mi, 4 * ki, 1 * mi},
		{"front-c64k", 64 * ki, 4 * ki, 0, 64 * ki},
	}
	for _, c := range cases {
		for _, pa := range seedPrealloc {
			b.Run(c.name+"/"+pa.name, func(b *testing.B) {
				writeStream(b, c.cs, pa.o, c.req, c.first, c.step, 64)
			})
		}
	}
}
