package qcow2

import (
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// hookDev calls before() ahead of every mutating op of a memdev. The
// cache writes tables back in parallel, so the hook is serialised.
type hookDev struct {
	*memdev.Dev
	mu     sync.Mutex
	before func()
}

func (h *hookDev) hook() func() {
	h.mu.Lock()
	h.before()
	return h.mu.Unlock
}

func (h *hookDev) Writev(off int64, b [][]byte) error {
	defer h.hook()()
	return h.Dev.Writev(off, b)
}

func (h *hookDev) WriteZeroes(off, n int64, f block.Flags) error {
	defer h.hook()()
	return h.Dev.WriteZeroes(off, n, f)
}

func (h *hookDev) Flush() error {
	defer h.hook()()
	return h.Dev.Flush()
}

func (h *hookDev) Close() error { return nil }

func (h *hookDev) Truncate(n int64) error {
	defer h.hook()()
	return h.Dev.Truncate(n)
}

const crashSector = 512

// crashPoint is a crash clone with what the guest may rely on.
type crashPoint struct {
	dev     *memdev.Dev
	flushed []byte // guest view at the last completed Flush
	touched []bool // sectors written since then (unknown after a crash)
}

// TestCrash_Clones crashes a workload at every device write, reopens each
// clone, checks it (leaks allowed, corruption never) and verifies that
// data flushed before the crash reads back. QRING_CRASH_POINTS sets how
// many crash points to try (make crash: >= 1000).
func TestCrash_Clones(t *testing.T) {
	points := 150
	if v, err := strconv.Atoi(os.Getenv("QRING_CRASH_POINTS")); err == nil && v > 0 {
		points = v
	}
	cases := []struct {
		name    string
		co      CreateOptions
		o       Options
		backing bool
	}{
		{"default", CreateOptions{}, Options{}, false},
		{"prealloc-off", CreateOptions{}, Options{Prealloc: "off"}, false},
		{"backing", CreateOptions{ClusterSize: 4096}, Options{}, true},
		{"c512-growth", CreateOptions{ClusterSize: 512, RefcountBits: 64}, Options{}, false},
		{"lazy", CreateOptions{LazyRefcounts: true, ClusterSize: 4096}, Options{}, false},
		{"v2", CreateOptions{Compat: "0.10", ClusterSize: 4096}, Options{}, false},
		// Extended L2 (subclusters): zero bits, in-place subcluster
		// allocation and per-subcluster COW from the backing file.
		{"xl2", CreateOptions{ClusterSize: 16 << 10, ExtendedL2: true}, Options{}, false},
		{"xl2-backing", CreateOptions{ClusterSize: 32 << 10, ExtendedL2: true}, Options{}, true},
		// Zeros streamed ahead by the filler, concurrently with the
		// workload (Q11): crash points land between fill writes too. A
		// small reserve keeps the pieces close to the frontier.
		{"fill-zeroes", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false},
	}
	total, corrupt := 0, 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, c := runCrash(t, tc.co, tc.o, tc.backing, points/len(cases)+1)
			total += n
			corrupt += c
		})
	}
	t.Logf("crash points tried: %d, corruptions: %d", total, corrupt)
}

func runCrash(t *testing.T, co CreateOptions, o Options, withBacking bool, maxPoints int) (int, int) {
	seed := testkit.Rand(t).Uint64()
	if withBacking {
		bdata := make([]byte, crashSize)
		for i := range bdata {
			bdata[i] = byte(i/512) | 1
		}
		o.Backing = memdev.FromBytes(bdata, memdev.Options{})
	}
	// Pass 1 counts the device ops; pass 2 replays the same workload
	// (deterministic for a seed) and clones at evenly spaced ops.
	nops := len(crashWorkload(t, seed, co, o, withBacking, func(int) bool { return false }))
	step := max(1, nops/maxPoints)
	pts := crashWorkload(t, seed, co, o, withBacking, func(i int) bool { return i%step == 0 })
	tried, bad := 0, 0
	for k, p := range pts {
		if p.dev == nil {
			continue
		}
		tried++
		if !verifyCrash(t, k, p, o, crashSize) {
			bad++
			if bad > 3 {
				t.Fatalf("too many failing crash points")
			}
		}
	}
	t.Logf("%d device ops, %d crash points tried", nops, tried)
	return tried, bad
}

const crashSize = 4 << 20

// crashWorkload runs a seeded single-goroutine workload and returns one
// entry per mutating device op, with a crash clone where want(i).
func crashWorkload(t *testing.T, seed uint64, co CreateOptions, o Options, withBacking bool, want func(int) bool) []crashPoint {
	rng := rand.New(rand.NewPCG(seed, 7))
	const size = crashSize
	co.Size = size
	var bdata []byte
	if o.Backing != nil {
		bdata = testkit.ReadAll(t, o.Backing)
	}
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	model := make([]byte, size)
	copy(model, bdata)
	flushed := append([]byte(nil), model...)
	touched := make([]bool, size/crashSector)
	var pts []crashPoint
	dev := &hookDev{Dev: mem}
	crng := rand.New(rand.NewPCG(seed, 1))
	dev.before = func() {
		var p crashPoint
		if want(len(pts)) {
			p = crashPoint{
				dev:     mem.CrashClone(crng, crng.Float64()),
				flushed: append([]byte(nil), flushed...),
				touched: append([]bool(nil), touched...),
			}
		}
		pts = append(pts, p)
	}
	im, err := OpenDevice(dev, o)
	if err != nil {
		t.Fatal(err)
	}
	cs := int64(im.Geometry().ClusterSize)
	// touched and flushed change under the hook's lock: the filler's
	// writes run the hook from other goroutines.
	touch := func(off, n int64) {
		dev.mu.Lock()
		defer dev.mu.Unlock()
		for s := off / crashSector; s <= (off+n-1)/crashSector; s++ {
			touched[s] = true
		}
	}
	for i := 0; i < 120; i++ {
		switch op := rng.IntN(100); {
		case op < 60:
			n := int64(1 + rng.IntN(20000))
			off := rng.Int64N(size - n)
			if i < 40 { // sequential allocating writes
				off = int64(i) * 3 * cs % (size - n)
			}
			b := pattern(int(n), byte(rng.Uint32()))
			touch(off, n)
			if _, err := im.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], b)
		case op < 70:
			off, n := rng.Int64N(size-3*cs), 1+rng.Int64N(3*cs)
			touch(off, n)
			if err := im.WriteZeroes(off, n, block.Flags(rng.IntN(2))*block.MayUnmap); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		case op < 78:
			c := rng.Int64N(size/cs - 2)
			if im.Header().Version < 3 && withBacking {
				continue
			}
			touch(c*cs, 2*cs)
			if err := im.Discard(c*cs, 2*cs); err != nil {
				t.Fatal(err)
			}
			clear(model[c*cs : c*cs+2*cs])
		default:
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			dev.mu.Lock()
			copy(flushed, model)
			clear(touched)
			dev.mu.Unlock()
		}
	}
	if o.PreallocFill == FillZeroes {
		im.waitFillIdle()
		if m := im.Metrics(); m.FillBytes == 0 {
			t.Fatalf("the filler wrote nothing: %v", m)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return pts
}

func verifyCrash(t *testing.T, k int, p crashPoint, o Options, size int64) bool {
	t.Helper()
	o.ReadOnly = false
	im, err := OpenDevice(p.dev, o)
	if err != nil {
		// A crash before the header reached the media leaves an empty
		// device: not an image yet, and nothing was flushed.
		if sz, _ := p.dev.Size(); sz == 0 {
			return true
		}
		t.Errorf("crash point %d: reopen: %v", k, err)
		return false
	}
	defer im.Close()
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
		t.Errorf("crash point %d: check: %v corruptions=%d errors=%d %v", k, err, r.Corruptions, r.CheckErrors, head(r.Messages, 5))
		return false
	}
	got := testkit.ReadAll(t, im)
	for s := int64(0); s < size/crashSector; s++ {
		if p.touched[s] {
			continue
		}
		lo, hi := s*crashSector, (s+1)*crashSector
		if i := testkit.FirstDiff(got[lo:hi], p.flushed[lo:hi]); i >= 0 {
			t.Errorf("crash point %d: flushed data lost at offset %d", k, lo+int64(i))
			return false
		}
	}
	// Repair leaks, then the image must be fully clean.
	if r.Leaks > 0 {
		r, err = im.Check(CheckOptions{Repair: RepairLeaks})
		if err != nil || !r.Clean() {
			t.Errorf("crash point %d: leak repair: %v %+v", k, err, r)
			return false
		}
	}
	return true
}
