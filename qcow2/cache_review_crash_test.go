package qcow2

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// concModel is the guest model of a concurrent crash workload: what
// every acknowledged op left, and per sector how many ops are in flight
// and the sequence number of the last one that started, so that a Flush
// knows which sectors it does not cover.
type concModel struct {
	mu        sync.Mutex
	rec       *crashRecorder
	seq       uint64
	inflight  []int
	lastStart []uint64
}

// begin marks the sectors of [off, off+n) as being written.
func (m *concModel) begin(off, n int64) {
	m.mu.Lock()
	m.rec.touch(off, n) // before any byte of it can reach the device
	m.seq++
	for s := off / crashSector; s <= (off+n-1)/crashSector; s++ {
		m.inflight[s]++
		m.lastStart[s] = m.seq
	}
	m.mu.Unlock()
}

// end records an acknowledged op: apply changes the model.
func (m *concModel) end(off, n int64, apply func(model []byte)) {
	m.mu.Lock()
	apply(m.rec.model)
	for s := off / crashSector; s <= (off+n-1)/crashSector; s++ {
		m.inflight[s]--
	}
	m.mu.Unlock()
}

// flush flushes the image and makes the model as it was when the flush
// started the one crash points must keep; sectors with an op in flight
// then, or started since, stay unknown.
func (m *concModel) flush(t *testing.T, im *Image) {
	m.mu.Lock()
	pre := append([]byte(nil), m.rec.model...)
	busy := make([]bool, len(m.inflight))
	for s, n := range m.inflight {
		busy[s] = n > 0
	}
	seq0 := m.seq
	m.mu.Unlock()
	if err := im.Flush(); err != nil {
		t.Error(err)
		return
	}
	m.mu.Lock()
	r := m.rec
	r.dev.mu.Lock()
	copy(r.flush, pre)
	for s := range r.touched {
		r.touched[s] = busy[s] || m.lastStart[s] > seq0
	}
	r.dev.mu.Unlock()
	m.mu.Unlock()
}

// TestCacheReview_CrashConcurrentTinyCache: writers, zeroers, discarders
// and readers on their own guest regions, and a flusher, run concurrently
// on images whose caches are the smallest the options allow, so L2
// slices and refcount blocks are evicted and written back (cache C6)
// from any of those goroutines, under their dependencies, while others
// allocate; with 512-byte clusters the refcount table grows too. Crash
// clones are taken at device ops; each must pass Check (leaks allowed),
// qemu-img check (for a few), and read back every write acknowledged
// before the last completed Flush. Reads during the run must see every
// acknowledged write.
func TestCacheReview_CrashConcurrentTinyCache(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		co   CreateOptions
		o    Options
	}{
		{"c512-rb64", CreateOptions{ClusterSize: 512, RefcountBits: 64},
			Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 512}},
		{"c4k-slices", CreateOptions{ClusterSize: 4096},
			Options{L2CacheSize: 2 * 512, L2CacheEntrySize: 512, RefcountCacheSize: 2 * 4096, CacheCleanInterval: 1e6}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runConcCrash(t, tc.co, tc.o) })
	}
}

func runConcCrash(t *testing.T, co CreateOptions, o Options) {
	seed := testkit.Rand(t).Uint64()
	size := int64(4 << 20) // with 512-byte clusters, the refcount table grows
	workers, ops, points := 4, 120, 24
	if testing.Short() {
		ops, points = 60, 10
	}
	if raceEnabled { // the invariants' flush-time checks cost most
		workers, ops, points, size = 3, 30, 5, 1<<20
	}
	// A crash clone every cloneEvery device ops, of which a uniform
	// sample of points is kept (reservoir): how many ops a run makes
	// varies with the scheduling.
	const cloneEvery = 7
	rec, im := openCrashRecorder(t, seed, co, o, make([]byte, size), func(int) bool { return false })
	mem := rec.dev.Dev
	crng := rand.New(rand.NewPCG(seed, 3))
	var kept []int // indexes into rec.pts
	cands := 0
	rec.dev.before = func() {
		k := len(rec.pts)
		rec.pts = append(rec.pts, crashPoint{})
		if k%cloneEvery != cloneEvery-1 {
			return
		}
		cands++
		slot := len(kept)
		if slot >= points {
			if slot = crng.IntN(cands); slot >= points {
				return
			}
			rec.pts[kept[slot]] = crashPoint{}
		}
		rec.pts[k] = crashPoint{
			dev:     mem.CrashClone(crng, crng.Float64()),
			flushed: append([]byte(nil), rec.flush...),
			touched: append([]bool(nil), rec.touched...),
		}
		if slot == len(kept) {
			kept = append(kept, k)
		} else {
			kept[slot] = k
		}
	}
	m := &concModel{rec: rec, inflight: make([]int, size/crashSector), lastStart: make([]uint64, size/crashSector)}
	cs := int64(im.Geometry().ClusterSize)
	region := size / int64(workers) / cs * cs // Discard leaves partial clusters alone
	var wg sync.WaitGroup
	done := make(chan struct{})
	kick := make(chan struct{}, 1) // a worker asks the flusher for a flush
	for w := range workers {
		rng := rand.New(rand.NewPCG(seed, uint64(10+w)))
		base := int64(w) * region
		wg.Go(func() {
			got := make([]byte, 0, 64<<10)
			for i := range ops {
				if t.Failed() {
					return
				}
				if i%6 == 5 {
					select {
					case kick <- struct{}{}:
					default:
					}
				}
				n := int64(1 + rng.IntN(int(min(region/4, 40000))))
				off := base + rng.Int64N(region-n)
				if i < ops/3 { // spread allocations: many L2 slices and blocks
					off = base + int64(i)*5*cs%(region-n)
				}
				switch p := rng.IntN(100); {
				case p < 55:
					b := pattern(int(n), byte(rng.Uint32()))
					m.begin(off, n)
					if _, err := im.WriteAt(b, off); err != nil {
						t.Error(err)
						return
					}
					m.end(off, n, func(model []byte) { copy(model[off:], b) })
				case p < 65:
					f := block.Flags(rng.IntN(2)) * block.MayUnmap
					m.begin(off, n)
					if err := im.WriteZeroes(off, n, f); err != nil {
						t.Error(err)
						return
					}
					m.end(off, n, func(model []byte) { clear(model[off : off+n]) })
				case p < 72:
					off, n := base+rng.Int64N(region/cs-2)*cs, 2*cs
					m.begin(off, n)
					if err := im.Discard(off, n); err != nil {
						t.Error(err)
						return
					}
					m.end(off, n, func(model []byte) { clear(model[off : off+n]) })
				default:
					// Only this goroutine writes its region: the model
					// is final for it.
					got = got[:n]
					if _, err := im.ReadAt(got, off); err != nil {
						t.Error(err)
						return
					}
					m.mu.Lock()
					i := testkit.FirstDiff(got, m.rec.model[off:off+n])
					m.mu.Unlock()
					if i >= 0 {
						t.Errorf("read at %d: acknowledged data lost at offset %d", off, off+int64(i))
						return
					}
				}
			}
		})
	}
	var fwg sync.WaitGroup
	fwg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-kick:
			}
			m.flush(t, im)
		}
	})
	wg.Wait()
	close(done)
	fwg.Wait()
	if t.Failed() {
		im.Close()
		return
	}
	m.flush(t, im)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	// The final image is clean and holds the model.
	fin := memdev.FromBytes(mem.Bytes(), memdev.Options{})
	final := crashPoint{dev: fin, flushed: rec.model, touched: make([]bool, size/crashSector)}
	if !verifyCrash(t, -1, final, o, size) {
		return
	}
	tried, bad := verifyCrashPoints(t, rec.pts, o, size)
	t.Logf("%d device ops, %d crash points tried, %d bad", len(rec.pts), tried, bad)
	if tried < 2 {
		t.Errorf("only %d crash points", tried)
	}
	// qemu-img check of a few clones (leaks allowed).
	dir := testkit.Dir(t)
	q := 0
	for k, p := range rec.pts {
		if p.dev == nil || q >= 3 || k%2 == 0 {
			continue
		}
		q++
		path := filepath.Join(dir, fmt.Sprintf("crash%d.qcow2", k))
		if err := p.dev.WriteFile(path); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheckNoCorruption(t, path)
	}
}
