package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// Randomized concurrent workloads over a failing device.
// Each run: a fresh image on memdev (RAM media, reserve-ahead with fill),
// opened over errordev; after open one fault is armed (an op kind, the
// n-th such op, once or from then on, EIO or ENOSPC). Workers each own a
// disjoint guest region and run writes, overwrites, zeroing with and
// without unmap, discards, compressed writes, reads and flushes; an admin
// goroutine creates and deletes snapshots, resizes past the workers'
// regions and flushes. Every sector a worker writes carries a stamp
// (write id, sector), so a read names the write it came from: each sector
// has a set of allowed writes (the last successful one, plus every failed
// one since). Checked: no panic or hang, no goroutine leak after Close,
// reads see only allowed writes, a crash clone taken after a worker's
// successful Flush holds the worker's data, and the device's bytes after
// Close (and a crash clone of them) pass Check and qemu-img check.

const (
	ioeSector  = 512
	ioeSize    = 4 << 20
	ioeWorkers = 3
	ioeRegion  = 1 << 20 // per worker; the last MiB is the admin's resize range
)

type ioeSet []uint64

func (s ioeSet) has(w uint64) bool {
	for _, x := range s {
		if x == w {
			return true
		}
	}
	return false
}

func (s ioeSet) add(w uint64) ioeSet {
	if s.has(w) {
		return s
	}
	return append(s, w)
}

// ioeStamp fills b (sector aligned, at guest offset off) with write w's
// stamp: per sector the id, the sector number, then byte(w) repeated
// (compressible).
func ioeStamp(b []byte, off int64, w uint64) {
	for i := 0; i < len(b); i += ioeSector {
		s := b[i : i+ioeSector]
		binary.LittleEndian.PutUint64(s, w)
		binary.LittleEndian.PutUint64(s[8:], uint64(off/ioeSector)+uint64(i/ioeSector))
		for j := 16; j < ioeSector; j++ {
			s[j] = byte(w) | 1
		}
	}
}

// ioeDecode names the write a sector came from (0: zeros) or fails.
func ioeDecode(s []byte, sector int64) (uint64, error) {
	zero := true
	for _, c := range s {
		if c != 0 {
			zero = false
			break
		}
	}
	if zero {
		return 0, nil
	}
	w := binary.LittleEndian.Uint64(s)
	if got := binary.LittleEndian.Uint64(s[8:]); got != uint64(sector) {
		return 0, fmt.Errorf("sector %d holds sector %d's data (write %d)", sector, got, w)
	}
	for j := 16; j < ioeSector; j++ {
		if s[j] != byte(w)|1 {
			return 0, fmt.Errorf("sector %d: garbage at byte %d (write id %d)", sector, j, w)
		}
	}
	return w, nil
}

type ioeWorker struct {
	base int64
	mu   sync.Mutex
	cand []ioeSet // allowed now
	// since: allowed on media after a crash: the candidates at the last
	// successful Flush of this worker plus everything attempted since.
	since []ioeSet
}

func newIoeWorker(base int64) *ioeWorker {
	n := ioeRegion / ioeSector
	w := &ioeWorker{base: base, cand: make([]ioeSet, n), since: make([]ioeSet, n)}
	for i := range w.cand {
		w.cand[i] = ioeSet{0}
		w.since[i] = ioeSet{0}
	}
	return w
}

func (w *ioeWorker) apply(off, n int64, id uint64, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := (off - w.base) / ioeSector; s < (off-w.base+n)/ioeSector; s++ {
		if ok {
			w.cand[s] = ioeSet{id}
		} else {
			w.cand[s] = w.cand[s].add(id)
		}
		w.since[s] = w.since[s].add(id)
	}
}

func (w *ioeWorker) flushed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for s := range w.cand {
		w.since[s] = append(ioeSet(nil), w.cand[s]...)
	}
}

func (w *ioeWorker) snap(useSince bool) []ioeSet {
	w.mu.Lock()
	defer w.mu.Unlock()
	src := w.cand
	if useSince {
		src = w.since
	}
	out := make([]ioeSet, len(src))
	for i := range src {
		out[i] = append(ioeSet(nil), src[i]...)
	}
	return out
}

// verify checks that buf (the worker's whole region) matches the sets.
func ioeVerify(buf []byte, base int64, sets []ioeSet) error {
	for i, set := range sets {
		sector := base/ioeSector + int64(i)
		id, err := ioeDecode(buf[i*ioeSector:(i+1)*ioeSector], sector)
		if err != nil {
			return err
		}
		if !set.has(id) {
			return fmt.Errorf("sector %d (guest %d) holds write %d, allowed %v", sector, sector*ioeSector, id, set)
		}
	}
	return nil
}

type ioeFault struct {
	op     errordev.Op
	nth    int64
	sticky bool
	err    error
	// landed: the failed request reached the media (torn: only its
	// first half of sectors) before the error (EIO's "may have
	// landed"); flushes fail for good after the first failure (B6).
	landed bool
}

// ioeDev is a fault-injecting device like errordev, whose failed writes
// may have landed (wholly or torn) before the error.
type ioeDev struct {
	child  *memdev.Dev
	decide func(op errordev.Op, off, n int64) (err error, landed bool)
	ffail  atomic.Bool
	rng    *rand.Rand
	mu     sync.Mutex
}

func (d *ioeDev) Readv(off int64, bufs [][]byte) error {
	if err, _ := d.decide(errordev.Read, off, block.VecLen(bufs)); err != nil {
		return err
	}
	return d.child.Readv(off, bufs)
}

func (d *ioeDev) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	err, landed := d.decide(errordev.Write, off, n)
	if err == nil {
		return d.child.Writev(off, bufs)
	}
	if landed {
		d.mu.Lock()
		torn := d.rng.IntN(2) == 0
		d.mu.Unlock()
		if torn && n >= 2*ioeSector {
			flat := make([]byte, 0, n)
			for _, b := range bufs {
				flat = append(flat, b...)
			}
			half := (n / 2) &^ (ioeSector - 1)
			d.child.Writev(off, [][]byte{flat[:half]})
		} else {
			d.child.Writev(off, bufs)
		}
	}
	return err
}

func (d *ioeDev) WriteZeroes(off, n int64, flags block.Flags) error {
	err, landed := d.decide(errordev.Zero, off, n)
	if err != nil && landed && errors.Is(err, syscall.ENOSPC) {
		// ext4's ZERO_RANGE out of space keeps what it got: the first
		// part, the file grown over it.
		d.child.WriteZeroes(off, (n/2)&^(ioeSector-1), flags)
		return err
	}
	if err == nil || landed {
		if cerr := d.child.WriteZeroes(off, n, flags); err == nil {
			return cerr
		}
	}
	return err
}

func (d *ioeDev) Flush() error {
	if d.ffail.Load() {
		return errors.New("ioeDev: " + block.ErrFlushFailed.Error())
	}
	err, landed := d.decide(errordev.Flush, 0, 0)
	if err == nil || landed {
		if cerr := d.child.Flush(); err == nil {
			return cerr
		}
	}
	if err != nil && os.Getenv("IOERR_NOB6") != "1" {
		d.ffail.Store(true)
	}
	return err
}

func (d *ioeDev) Truncate(size int64) error {
	if err, _ := d.decide(errordev.Truncate, size, 0); err != nil {
		return err
	}
	return d.child.Truncate(size)
}

func (d *ioeDev) Size() (int64, error) { return d.child.Size() }
func (d *ioeDev) Caps() block.Caps     { return d.child.Caps() }
func (d *ioeDev) Close() error         { return d.child.Close() }

func (f ioeFault) String() string {
	k := "once"
	if f.sticky {
		k = "sticky"
	}
	return fmt.Sprintf("%v#%d/%s/%v", f.op, f.nth, k, f.err)
}

type ioeClone struct {
	dev  *memdev.Dev
	ddev *memdev.Dev
	what string
	w    *ioeWorker
	sets []ioeSet
}

type ioeResult struct {
	fired    bool
	errs     []string // test failures
	firstErr error
}

func ioeRunOnce(t *testing.T, seed uint64, f ioeFault, qemu bool) {
	rng := rand.New(rand.NewPCG(seed, 7))
	cs := []int{512, 4096, 65536}[rng.IntN(3)]
	co := CreateOptions{Size: ioeSize, ClusterSize: cs}
	if cs >= 16384 && rng.IntN(2) == 0 {
		co.ExtendedL2 = true
	}
	if rng.IntN(4) == 0 {
		co.LazyRefcounts = true
	}
	useBacking := rng.IntN(3) == 0
	if os.Getenv("IOERR_LUKS") == "1" || rng.IntN(6) == 0 {
		co.Encrypt = sweepLUKS
	}
	useQueue := rng.IntN(2) == 0
	useDF := rng.IntN(3) == 0
	var dmem *memdev.Dev
	if useDF {
		co.DataFile = "d.raw"
		co.DataFileRaw = rng.IntN(2) == 0 && co.Encrypt.Format == ""
		if co.DataFileRaw {
			useBacking = false
		}
		dmem = memdev.New(memdev.Options{Media: block.MediaRAM})
		if err := dmem.Truncate(ioeSize); err != nil {
			t.Fatal(err)
		}
		dmem.Flush()
	}
	mem := memdev.New(memdev.Options{Media: block.MediaRAM})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	if err := mem.Flush(); err != nil {
		t.Fatal(err)
	}
	o := Options{
		Passphrase:        co.Encrypt.Passphrase,
		PreallocFill:      FillZeroes,
		PreallocSize:      256 << 10,
		PreallocAlign:     64 << 10,
		L2CacheSize:       int64(2 * cs),
		RefcountCacheSize: int64(2 * cs),
	}
	switch rng.IntN(3) {
	case 0:
		o.PreallocSize, o.PreallocAlign = 0, 0
	case 1:
		o.Prealloc = "off"
	}
	if useDF && co.DataFileRaw {
		im, err := OpenDevice(mem, Options{DataDevice: dmem, Passphrase: co.Encrypt.Passphrase})
		if err != nil {
			t.Fatal(err)
		}
		if err := im.dfLinkRange(0, co.Size); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		mem.Flush()
		dmem.Flush()
	}
	var bdata []byte
	if useBacking {
		bdata = make([]byte, ioeSize/2)
		ioeStamp(bdata, 0, 1)
		o.Backing = memdev.FromBytes(bdata, memdev.Options{})
	}
	var counts [8]atomic.Int64
	var fired atomic.Bool
	var failClone, failDClone atomic.Pointer[memdev.Dev]
	cloneRng := rand.New(rand.NewPCG(seed, 9))
	var cloneMu sync.Mutex
	var armed atomic.Bool
	decide := func(op errordev.Op, off, n int64) (error, bool) {
		if !armed.Load() {
			return nil, false
		}
		c := counts[op].Add(1) - 1
		if op != f.op {
			if f.sticky && fired.Load() {
				return f.err, false
			}
			return nil, false
		}
		if c == f.nth || (f.sticky && c > f.nth) {
			if !fired.Swap(true) {
				cloneMu.Lock()
				failClone.Store(mem.CrashClone(cloneRng, 0.5))
				if dmem != nil {
					failDClone.Store(dmem.CrashClone(cloneRng, 0.5))
				}
				cloneMu.Unlock()
			}
			landed := f.landed
			if errors.Is(f.err, syscall.ENOSPC) && n >= 8192 && (op == errordev.Write || op == errordev.Zero) {
				landed = true // a long request refused for space part-way (torn below)
			}
			return f.err, landed
		}
		return nil, false
	}
	ed := &ioeDev{child: mem, decide: decide, rng: rand.New(rand.NewPCG(seed, 11))}
	if useDF {
		o.DataDevice = &ioeDev{child: dmem, decide: decide, rng: rand.New(rand.NewPCG(seed, 12))}
	}
	name := fmt.Sprintf("enc=%v seed=%d df=%v raw=%v cs=%d xl2=%v lazy=%v backing=%v queue=%v fault=%v landed=%v prealloc=%q/%d", co.Encrypt.Format != "", seed, useDF, co.DataFileRaw, cs, co.ExtendedL2, co.LazyRefcounts, useBacking, useQueue, f, f.landed, o.Prealloc, o.PreallocSize)

	g0 := runtime.NumGoroutine()
	im, err := OpenDevice(ed, o)
	if err != nil {
		t.Fatalf("%s: open: %v", name, err)
	}
	armed.Store(true)

	workers := make([]*ioeWorker, ioeWorkers)
	for i := range workers {
		workers[i] = newIoeWorker(int64(i) * ioeRegion)
		for j := range workers[i].cand {
			if (workers[i].base + int64(j)*ioeSector) < int64(len(bdata)) {
				workers[i].cand[j] = ioeSet{1}
				workers[i].since[j] = ioeSet{1}
			}
		}
	}
	var (
		nextID   atomic.Uint64
		clonesMu sync.Mutex
		clones   []ioeClone
		failMu   sync.Mutex
		failures []string
		panics   []string
	)
	fail := func(format string, args ...any) {
		failMu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		failMu.Unlock()
	}
	nextID.Store(1000)
	var ecMu sync.Mutex
	ec := map[string]int{}
	errClass := func(err error) {
		m := err.Error()
		if len(m) > 90 {
			m = m[:90]
		}
		ecMu.Lock()
		ec[m]++
		ecMu.Unlock()
	}
	const steps = 60
	var wg sync.WaitGroup
	runG := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if v := recover(); v != nil {
					buf := make([]byte, 64<<10)
					buf = buf[:runtime.Stack(buf, false)]
					failMu.Lock()
					panics = append(panics, fmt.Sprintf("panic: %v\n%s", v, buf))
					failMu.Unlock()
				}
			}()
			fn()
		}()
	}
	for wi, w := range workers {
		wr := rand.New(rand.NewPCG(seed, uint64(wi)+100))
		if useQueue && wi == len(workers)-1 {
			runG(func() { ioeQueueWorker(im, w, wr, cs, &nextID, fail) })
			continue
		}
		runG(func() {
			nsec := int64(ioeRegion / ioeSector)
			for range steps {
				k := wr.IntN(100)
				switch {
				case k < 40: // write (new or overwrite)
					s := wr.Int64N(nsec)
					n := min(1+wr.Int64N(int64(2*cs/ioeSector)), nsec-s)
					off, ln := w.base+s*ioeSector, n*ioeSector
					id := nextID.Add(1)
					b := make([]byte, ln)
					ioeStamp(b, off, id)
					_, err := im.WriteAt(b, off)
					if err != nil && !errors.Is(err, errordev.ErrInjected) {
						errClass(err)
					}
					w.apply(off, ln, id, err == nil)
					if err == nil {
						rb := make([]byte, ln)
						if _, rerr := im.ReadAt(rb, off); rerr == nil {
							sets := w.snap(false)
							if verr := ioeVerify(rb, off, sets[s:s+n]); verr != nil {
								fail("read after write(%d,%d): %v", off, ln, verr)
							}
						}
					}
				case k < 52: // zero
					s := wr.Int64N(nsec)
					n := min(1+wr.Int64N(int64(3*cs/ioeSector)), nsec-s)
					var fl block.Flags
					if wr.IntN(2) == 0 {
						fl = block.MayUnmap
					}
					off, ln := w.base+s*ioeSector, n*ioeSector
					err := im.WriteZeroes(off, ln, fl)
					w.apply(off, ln, 0, err == nil)
				case k < 60: // discard whole clusters
					nc := int64(ioeRegion / cs)
					c := wr.Int64N(nc)
					n := min(1+wr.Int64N(2), nc-c)
					off, ln := w.base+c*int64(cs), n*int64(cs)
					err := im.Discard(off, ln)
					w.apply(off, ln, 0, err == nil)
				case k < 68 && useDF: // no compressed writes with a data file
				case k < 68: // compressed
					nc := int64(ioeRegion / cs)
					off := w.base + wr.Int64N(nc)*int64(cs)
					id := nextID.Add(1)
					b := make([]byte, cs)
					ioeStamp(b, off, id)
					err := im.WriteCompressed(off, b)
					w.apply(off, int64(cs), id, err == nil)
				case k < 80: // read
					rb := make([]byte, ioeRegion)
					sets := w.snap(false)
					if _, err := im.ReadAt(rb, w.base); err == nil {
						if verr := ioeVerify(rb, w.base, sets); verr != nil {
							fail("read of region %d: %v", w.base, verr)
						}
					}
				default: // flush, and a crash clone right after
					sets := w.snap(false)
					if err := im.Flush(); err == nil {
						cloneMu.Lock()
						c := mem.CrashClone(cloneRng, 0)
						var dc *memdev.Dev
						if dmem != nil {
							dc = dmem.CrashClone(cloneRng, 0)
						}
						cloneMu.Unlock()
						w.flushed()
						clonesMu.Lock()
						if len(clones) < 12 {
							clones = append(clones, ioeClone{dev: c, ddev: dc, what: fmt.Sprintf("clone after flush of worker %d", w.base/ioeRegion), w: w, sets: sets})
						}
						clonesMu.Unlock()
					}
				}
			}
		})
	}
	ar := rand.New(rand.NewPCG(seed, 50))
	runG(func() {
		var snaps []string
		size := int64(ioeSize)
		for i := range steps / 3 {
			switch k := ar.IntN(10); {
			case k < 5 && useDF: // no snapshots with a data file
			case k < 3:
				nm := "s" + strconv.Itoa(i)
				if _, err := im.CreateSnapshot(nm); err == nil {
					snaps = append(snaps, nm)
				}
			case k < 5 && len(snaps) > 0:
				j := ar.IntN(len(snaps))
				if err := im.DeleteSnapshot(snaps[j]); err == nil {
					snaps = append(snaps[:j], snaps[j+1:]...)
				}
			case k < 7:
				if size == ioeSize {
					if im.Shrink(ioeSize-512<<10) == nil {
						size = ioeSize - 512<<10
					}
				} else if im.Truncate(ioeSize) == nil {
					size = ioeSize
				}
			default:
				im.Flush()
			}
			time.Sleep(time.Duration(ar.IntN(300)) * time.Microsecond)
		}
	})
	done := make(chan struct{})
	var closeErr error
	go func() {
		wg.Wait()
		closeErr = im.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s: hung\n%s", name, buf)
	}
	for _, p := range panics {
		t.Errorf("%s: %s", name, p)
	}
	for _, e := range head(failures, 5) {
		t.Errorf("%s: %s", name, e)
	}
	// Goroutine leak (the wait is a hang guard: goroutines that are
	// ending exit late on a loaded machine; 3 s was short for that).
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > g0 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%s: goroutine leak: %d before open, %d after Close\n%s", name, g0, g, buf)
	}
	if !fired.Load() {
		if closeErr != nil {
			t.Errorf("%s: Close without a fault: %v", name, closeErr)
		}
	}

	t.Logf("%s: fired=%v close=%v noninjected=%v", name, fired.Load(), closeErr, ec)
	check := func(what string, dev, ddev *memdev.Dev, sets func(w *ioeWorker) []ioeSet, qemuToo bool) {
		d2 := memdev.FromBytes(dev.Bytes(), memdev.Options{})
		o2 := Options{Backing: o.Backing, Passphrase: o.Passphrase}
		if ddev != nil {
			o2.DataDevice = memdev.FromBytes(ddev.Bytes(), memdev.Options{})
		}
		im2, err := OpenDevice(d2, o2)
		if err != nil {
			t.Errorf("%s: %s: reopen: %v", name, what, err)
			return
		}
		defer func() {
			if err := im2.Close(); err != nil {
				t.Errorf("%s: %s: close of reopened: %v", name, what, err)
			}
			if qemuToo && testkit.HaveQemu() && ddev == nil {
				qemuImgCheckBytes(t, name+": "+what, d2.Bytes(), false, o.Passphrase)
			}
		}()
		r, err := im2.Check(CheckOptions{})
		if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
			if err == nil && r.CheckErrors == 0 && onlyCopied(r.Messages) {
				// A power cut inside a snapshot operation (doc Q6):
				// repaired, and then clean.
				if r, err = im2.Check(CheckOptions{Repair: RepairAll}); err == nil {
					r, err = im2.Check(CheckOptions{})
				}
				if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
					t.Errorf("%s: %s: check after repair: %v corruptions=%d %v", name, what, err, r.Corruptions, head(r.Messages, 6))
				}
			} else {
				t.Errorf("%s: %s: check: %v corruptions=%d errors=%d %v", name, what, err, r.Corruptions, r.CheckErrors, head(r.Messages, 6))
			}
		}
		if sets != nil {
			for _, w := range workers {
				ss := sets(w)
				if ss == nil {
					continue
				}
				rb := make([]byte, ioeRegion)
				if _, err := im2.ReadAt(rb, w.base); err != nil {
					t.Errorf("%s: %s: read: %v", name, what, err)
					continue
				}
				if err := ioeVerify(rb, w.base, ss); err != nil {
					t.Errorf("%s: %s: worker %d: %v", name, what, w.base/ioeRegion, err)
				}
			}
		}
	}
	for _, c := range clones {
		check(c.what, c.dev, c.ddev, func(w *ioeWorker) []ioeSet {
			if w != c.w {
				return nil
			}
			return c.sets
		}, false)
	}
	if fc := failClone.Load(); fc != nil {
		check("clone at the failure", fc, failDClone.Load(), nil, qemu)
	}
	final := func(w *ioeWorker) []ioeSet { return w.snap(closeErr != nil) }
	var dcl *memdev.Dev
	if dmem != nil {
		dcl = dmem.CrashClone(cloneRng, 0)
	}
	check(fmt.Sprintf("device after Close (close err %v)", closeErr), mem, dmem, final, qemu)
	check("crash clone after Close", mem.CrashClone(cloneRng, 0), dcl, func(w *ioeWorker) []ioeSet { return w.snap(true) }, false)
}

func TestIoErr_Concurrent(t *testing.T) {
	runs := 16
	if raceEnabled {
		runs = 2 // a sample (about 20 s a run); all 16 run without it (Makefile's BOTHPASSES)
	}
	if v := os.Getenv("IOERR_RUNS"); v != "" {
		runs, _ = strconv.Atoi(v)
	}
	base := testkit.Seed(t)
	if v := os.Getenv("IOERR_SEED"); v != "" {
		s, _ := strconv.ParseUint(v, 10, 64)
		base = s
	}
	ops := []errordev.Op{errordev.Read, errordev.Write, errordev.Zero, errordev.Flush, errordev.Truncate}
	for i := range runs {
		seed := base + uint64(i)
		rng := rand.New(rand.NewPCG(seed, 1))
		f := ioeFault{op: ops[rng.IntN(len(ops))], sticky: rng.IntN(3) == 0, err: errordev.ErrInjectedEIO}
		if rng.IntN(2) == 0 {
			f.err = errordev.ErrInjectedENOSPC
		} else {
			f.landed = rng.IntN(2) == 0
		}
		if v := os.Getenv("IOERR_OP"); v != "" {
			for _, op := range ops {
				if op.String() == v {
					f.op = op
				}
			}
			f.landed = false
		}
		f.nth = rng.Int64N(map[errordev.Op]int64{errordev.Read: 60, errordev.Write: 200, errordev.Zero: 60, errordev.Flush: 40, errordev.Truncate: 6}[f.op])
		if !t.Run(fmt.Sprintf("%d", seed), func(t *testing.T) { ioeRunOnce(t, seed, f, i%8 == 0) }) {
			// keep going: more findings per run
		}
	}
}

// ioeQueueWorker runs the worker's ops through a Queue: batches of
// writes (allocating and in place) and reads, zeroings and discards.
func ioeQueueWorker(im *Image, w *ioeWorker, wr *rand.Rand, cs int, nextID *atomic.Uint64, fail func(string, ...any)) {
	q, err := im.NewQueue(16)
	if err != nil {
		return
	}
	defer q.Close()
	nsec := int64(ioeRegion / ioeSector)
	for range 25 {
		n := 1 + wr.IntN(8)
		var reqs []*block.Req
		type wmeta struct {
			id    uint64
			read  bool
			sets  []ioeSet
			first int64
		}
		metas := map[*block.Req]wmeta{}
		used := map[int64]bool{} // clusters: no two requests in one
		for range n {
			s := wr.Int64N(nsec)
			ln := min(1+wr.Int64N(int64(max(cs/ioeSector, 2))), nsec-s)
			off := w.base + s*ioeSector
			c0, c1 := off/int64(cs), (off+ln*ioeSector-1)/int64(cs)
			clash := false
			for c := c0; c <= c1; c++ {
				if used[c] {
					clash = true
				}
			}
			if clash {
				continue
			}
			for c := c0; c <= c1; c++ {
				used[c] = true
			}
			switch k := wr.IntN(10); {
			case k < 6:
				id := nextID.Add(1)
				b := make([]byte, ln*ioeSector)
				ioeStamp(b, off, id)
				r := &block.Req{Op: block.OpWrite, Off: off, Buf: b}
				reqs = append(reqs, r)
				metas[r] = wmeta{id: id}
			case k < 8:
				r := &block.Req{Op: block.OpRead, Off: off, Buf: make([]byte, ln*ioeSector)}
				reqs = append(reqs, r)
				metas[r] = wmeta{read: true, sets: w.snap(false)[s : s+ln], first: off}
			default:
				r := &block.Req{Op: block.OpWriteZeroes, Off: off, Len: ln * ioeSector}
				if wr.IntN(2) == 0 {
					r.Flags = block.MayUnmap
				}
				reqs = append(reqs, r)
				metas[r] = wmeta{id: 0}
			}
		}
		if len(reqs) == 0 {
			continue
		}
		if err := q.Submit(reqs...); err != nil {
			for _, r := range reqs {
				if m := metas[r]; !m.read {
					w.apply(r.Off, max(int64(len(r.Buf)), r.Len), m.id, false)
				}
			}
			if errors.Is(err, block.ErrClosed) {
				return
			}
			continue
		}
		block.Drain(q)
		for _, r := range reqs {
			m := metas[r]
			if m.read {
				if r.Err == nil {
					if verr := ioeVerify(r.Buf, r.Off, m.sets); verr != nil {
						fail("queued read(%d,%d): %v", r.Off, len(r.Buf), verr)
					}
				}
				continue
			}
			w.apply(r.Off, max(int64(len(r.Buf)), r.Len), m.id, r.Err == nil)
		}
	}
}

// truncatePrealloc grows the disk with TruncatePrealloc: the grown range
// reads as zeros, or is unknown after a failure.
func (r *sweepRun) truncatePrealloc(size int64, mode string) error {
	if r.err != nil {
		return r.err
	}
	cur, err := r.im.Size()
	if err != nil {
		return r.fail("Size", 0, 0, err)
	}
	end := int64(len(r.m.cur))
	r.m.mark(r.m.dirty, cur, end-cur)
	if err := r.im.TruncatePrealloc(size, mode); err != nil {
		return r.fail("TruncatePrealloc("+mode+")", cur, end-cur, err)
	}
	clear(r.m.cur[cur:])
	return nil
}

// TestIoErr_TruncatePreallocSweep: resizes with preallocation
// (metadata, falloc, full) under the fault sweep.
func TestIoErr_TruncatePreallocSweep(t *testing.T) {
	var wls []sweepWorkload
	for _, mode := range []string{PreallocMetadata, PreallocFalloc, PreallocFull} {
		for _, cs := range []int{4096, 65536} {
			wls = append(wls, sweepWorkload{name: fmt.Sprintf("%s-%d", mode, cs), size: 8 << 20, co: CreateOptions{ClusterSize: cs, Size: 2 << 20}, run: func(r *sweepRun) error {
				r.write(100, pattern(9000, 1))
				r.write(1<<20+7, pattern(3000, 2))
				r.flush()
				r.truncatePrealloc(5<<20, mode)
				r.write(4<<20+512, pattern(4096, 3))
				r.write(1000, pattern(100, 4))
				r.flush()
				r.truncatePrealloc(8<<20, mode)
				r.write(7<<20, pattern(5000, 5))
				return r.flush()
			}})
		}
	}
	runSweep(t, wls)
}

// TestIoErr_OpenFaultLeaks: an open that fails at device op i (a
// read of the header, tables, snapshot table, bitmaps; the writes a
// writable open makes) leaves no goroutine behind.
func TestIoErr_OpenFaultLeaks(t *testing.T) {
	mem := memdev.New(memdev.Options{Media: block.MediaRAM})
	if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: 4096, LazyRefcounts: true}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(64<<10, 1), 0)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, im, pattern(8<<10, 2), 1<<20)
	if err := im.AddBitmap("b", 65536, true); err != nil {
		t.Logf("no bitmap: %v", err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	img := mem.Bytes() // lazy: left dirty, so the open repairs
	im.Close()
	for _, sticky := range []bool{false, true} {
		for i := int64(0); i < 200; i++ {
			ix := errordev.OnIndex(i, errordev.ErrInjectedEIO)
			if sticky {
				ix = errordev.OnIndexSticky(i, errordev.ErrInjectedEIO)
			}
			dev := errordev.New(memdev.FromBytes(img, memdev.Options{Media: block.MediaRAM}), ix, errordev.Options{})
			g0 := runtime.NumGoroutine()
			im, err := OpenDevice(dev, Options{PreallocFill: FillZeroes, CacheCleanInterval: time.Second})
			if err == nil {
				im.Close()
				if ix.Fired() == 0 {
					break
				}
			}
			deadline := time.Now().Add(20 * time.Second) // a hang guard (it was 2 s)
			for runtime.NumGoroutine() > g0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if g := runtime.NumGoroutine(); g > g0 {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("fault at op %d (sticky %v): open err %v: %d goroutines before, %d after\n%s", i, sticky, err, g0, g, buf)
			}
		}
	}
}
