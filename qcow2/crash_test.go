package qcow2

import (
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
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
	touched []bool // sectors written since then that may hold anything after a crash
	// held: every value the recorder's writes and discards gave a
	// sector since then; after a crash each of its bytes reads one of
	// them or the flushed one (old or new, torture_held_test.go).
	held map[int64][][]byte
}

// crashRecorder runs a workload's ops on an image over its device and
// keeps the guest model; it records a crashPoint before every mutating
// device op, with a crash clone where want(i). touched and flush change
// under the hook's lock: the filler's writes run the hook from other
// goroutines.
type crashRecorder struct {
	dev     *hookDev
	model   []byte // guest view after the ops so far
	flush   []byte // guest view at the last completed Flush
	touched []bool
	held    map[int64][][]byte // see crashPoint
	pts     []crashPoint
}

// openCrashRecorder creates an image with co on a new memdev, starting
// from the guest view model, flushed, and opens it with o through the
// recorder's device.
func openCrashRecorder(t *testing.T, seed uint64, co CreateOptions, o Options, model []byte, want func(int) bool) (*crashRecorder, *Image) {
	t.Helper()
	return openCrashRecorderDev(t, seed, co, o, memdev.Options{}, model, want)
}

// openCrashRecorderDev is openCrashRecorder on a memdev made with mo
// (its advertised capabilities: alignment, media).
func openCrashRecorderDev(t *testing.T, seed uint64, co CreateOptions, o Options, mo memdev.Options, model []byte, want func(int) bool) (*crashRecorder, *Image) {
	t.Helper()
	co.Size = int64(len(model))
	mem := memdev.New(mo)
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	r := &crashRecorder{
		dev:     &hookDev{Dev: mem},
		model:   model,
		flush:   append([]byte(nil), model...),
		touched: make([]bool, int64(len(model))/crashSector),
		held:    map[int64][][]byte{},
	}
	crng := rand.New(rand.NewPCG(seed, 1))
	r.dev.before = func() {
		var p crashPoint
		if want(len(r.pts)) {
			p = crashPoint{
				dev:     mem.CrashClone(crng, crng.Float64()),
				flushed: append([]byte(nil), r.flush...),
				touched: append([]bool(nil), r.touched...),
				held:    maps.Clone(r.held),
			}
		}
		r.pts = append(r.pts, p)
	}
	im, err := OpenDevice(r.dev, o)
	if err != nil {
		t.Fatal(err)
	}
	return r, im
}

// verifyCrashPoints verifies every cloned point of pts, failing the test
// after more than three bad ones.
func verifyCrashPoints(t *testing.T, pts []crashPoint, o Options, size int64) (tried, bad int) {
	t.Helper()
	for k, p := range pts {
		if p.dev == nil {
			continue
		}
		tried++
		if !verifyCrash(t, k, p, o, size) {
			if bad++; bad > 3 {
				t.Fatalf("too many failing crash points")
			}
		}
	}
	return tried, bad
}

// touch marks the sectors of [off, off+n) written since the last flush.
func (r *crashRecorder) touch(off, n int64) {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	for s := off / crashSector; s <= (off+n-1)/crashSector; s++ {
		r.touched[s] = true
	}
}

// expect records the value each sector of [off, off+n) will hold once
// the op about to run has applied (apply turns w, a copy of the model's
// bytes from at, into it), before any of its requests can reach the
// device.
func (r *crashRecorder) expect(off, n int64, apply func(w []byte, at int64)) {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	at := off / crashSector * crashSector
	end := min((off+n+crashSector-1)/crashSector*crashSector, int64(len(r.model)))
	w := slices.Clone(r.model[at:end])
	apply(w, at)
	for p := at; p < end; p += crashSector {
		r.held[p/crashSector] = append(r.held[p/crashSector], w[p-at:min(p-at+crashSector, end-at)])
	}
}

func (r *crashRecorder) write(t *testing.T, im *Image, off int64, b []byte) {
	t.Helper()
	r.expect(off, int64(len(b)), func(w []byte, at int64) { copy(w[off-at:], b) })
	if _, err := im.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	copy(r.model[off:], b)
}

func (r *crashRecorder) discard(t *testing.T, im *Image, off, n int64) {
	t.Helper()
	r.expect(off, n, func(w []byte, at int64) { clear(w[off-at : off-at+n]) })
	if err := im.Discard(off, n); err != nil {
		t.Fatal(err)
	}
	clear(r.model[off : off+n])
}

func (r *crashRecorder) flushImage(t *testing.T, im *Image) {
	t.Helper()
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	r.dev.mu.Lock()
	copy(r.flush, r.model)
	clear(r.touched)
	clear(r.held)
	r.dev.mu.Unlock()
}

// reopenCrash opens crash clone k. A crash before the header reached the
// media leaves an empty device: not an image yet, and nothing was
// flushed, so it returns no image and ok. A failed open is an error and
// returns no image and !ok.
func reopenCrash(t *testing.T, k int, dev *memdev.Dev, o Options) (im *Image, ok bool) {
	t.Helper()
	im, err := OpenDevice(dev, o)
	if err != nil {
		if sz, _ := dev.Size(); sz == 0 {
			return nil, true
		}
		t.Errorf("crash point %d: reopen: %v", k, err)
		return nil, false
	}
	return im, true
}

// crashPoints is how many crash points a crash test tries: the
// QRING_CRASH_POINTS environment variable when set (make crash: >= 1000),
// else race under the race detector, else def. make test runs the crash
// tests twice: all def points without the race detector, and race of
// them under it with -tags invariants, whose checks make each point
// about 30 times as costly. The invariants pass with at least every
// default point (and every op of TestCrash_Snapshot):
// QRING_CRASH_POINTS=1200 go test -race -tags invariants -run TestCrash ./qcow2
func crashPoints(def, race int) int {
	if v, err := strconv.Atoi(os.Getenv("QRING_CRASH_POINTS")); err == nil && v > 0 {
		return v
	}
	if raceEnabled {
		return race
	}
	return def
}

// TestCrash_Clones crashes a workload at every device write, reopens each
// clone, checks it (leaks allowed, corruption never) and verifies that
// data flushed before the crash reads back. QRING_CRASH_POINTS sets how
// many crash points to try (make crash: >= 1000; crashPoints).
func TestCrash_Clones(t *testing.T) {
	t.Parallel()
	points := crashPoints(150, 54)
	cases := []struct {
		name    string
		co      CreateOptions
		o       Options
		backing bool
		mo      memdev.Options // the device's capabilities
	}{
		{"default", CreateOptions{}, Options{}, false, memdev.Options{}},
		{"prealloc-off", CreateOptions{}, Options{Prealloc: "off"}, false, memdev.Options{}},
		{"backing", CreateOptions{ClusterSize: 4096}, Options{}, true, memdev.Options{}},
		{"c512-growth", CreateOptions{ClusterSize: 512, RefcountBits: 64}, Options{}, false, memdev.Options{}},
		{"lazy", CreateOptions{LazyRefcounts: true, ClusterSize: 4096}, Options{}, false, memdev.Options{}},
		{"v2", CreateOptions{Compat: "0.10", ClusterSize: 4096}, Options{}, false, memdev.Options{}},
		// Extended L2 (subclusters): zero bits, in-place subcluster
		// allocation and per-subcluster COW from the backing file.
		{"xl2", CreateOptions{ClusterSize: 16 << 10, ExtendedL2: true}, Options{}, false, memdev.Options{}},
		{"xl2-backing", CreateOptions{ClusterSize: 32 << 10, ExtendedL2: true}, Options{}, true, memdev.Options{}},
		// Zeros streamed ahead by the filler, concurrently with the
		// workload (Q11): crash points land between fill writes too. A
		// small reserve keeps the pieces close to the frontier.
		{"fill-zeroes", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false, memdev.Options{}},
		// Lazy refcounts on extended L2: a link that only sets a
		// subcluster's bits depends on a flush of its data all the
		// same (Q2), with no refcount update to order it.
		{"xl2-lazy", CreateOptions{ClusterSize: 16 << 10, ExtendedL2: true, LazyRefcounts: true}, Options{}, true, memdev.Options{}},
		// A device aligned as an O_DIRECT file on 4 KiB sectors: tables
		// written by whole blocks, zeroing refused at sub-block edges
		// (COW zeros of 512-byte clusters written as buffers).
		{"align4k-c512", CreateOptions{ClusterSize: 512}, Options{}, false, memdev.Options{Align: 4096}},
		{"align4k-backing", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, true, memdev.Options{Align: 4096}},
	}
	total, corrupt := 0, 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, c := runCrashDev(t, tc.co, tc.o, tc.mo, tc.backing, points/len(cases)+1)
			total += n
			corrupt += c
		})
	}
	t.Logf("crash points tried: %d, corruptions: %d", total, corrupt)
}

func runCrash(t *testing.T, co CreateOptions, o Options, withBacking bool, maxPoints int) (int, int) {
	return runCrashDev(t, co, o, memdev.Options{}, withBacking, maxPoints)
}

// runCrashDev is runCrash on a memdev made with mo.
func runCrashDev(t *testing.T, co CreateOptions, o Options, mo memdev.Options, withBacking bool, maxPoints int) (int, int) {
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
	nops := len(crashWorkload(t, seed, co, o, mo, withBacking, func(int) bool { return false }))
	step := max(1, nops/maxPoints)
	pts := crashWorkload(t, seed, co, o, mo, withBacking, func(i int) bool { return i%step == 0 })
	tried, bad := verifyCrashPoints(t, pts, o, crashSize)
	t.Logf("%d device ops, %d crash points tried", nops, tried)
	return tried, bad
}

const crashSize = 4 << 20

// crashWorkload runs a seeded single-goroutine workload and returns one
// entry per mutating device op, with a crash clone where want(i).
func crashWorkload(t *testing.T, seed uint64, co CreateOptions, o Options, mo memdev.Options, withBacking bool, want func(int) bool) []crashPoint {
	rng := rand.New(rand.NewPCG(seed, 7))
	const size = crashSize
	model := make([]byte, size)
	if o.Backing != nil {
		copy(model, testkit.ReadAll(t, o.Backing))
	}
	rec, im := openCrashRecorderDev(t, seed, co, o, mo, model, want)
	cs := int64(im.Geometry().ClusterSize)
	for i := 0; i < 120; i++ {
		switch op := rng.IntN(100); {
		case op < 60:
			n := int64(1 + rng.IntN(20000))
			off := rng.Int64N(size - n)
			if i < 40 { // sequential allocating writes
				off = int64(i) * 3 * cs % (size - n)
			}
			rec.write(t, im, off, pattern(int(n), byte(rng.Uint32())))
		case op < 70:
			off, n := rng.Int64N(size-3*cs), 1+rng.Int64N(3*cs)
			rec.touch(off, n)
			if err := im.WriteZeroes(off, n, block.Flags(rng.IntN(2))*block.MayUnmap); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		case op < 78:
			c := rng.Int64N(size/cs - 2)
			if im.Header().Version < 3 && withBacking {
				continue
			}
			rec.discard(t, im, c*cs, 2*cs)
		default:
			rec.flushImage(t, im)
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
	return rec.pts
}

// crashQemuEvery: every crashQemuEvery-th crash point of verifyCrash
// goes through qemu-img check as well, as the crash left it (leaks
// allowed; not a dirty lazy-refcounts image, whose refcounts QEMU
// repairs at open) and after the engine's recovery (clean).
const crashQemuEvery = 8

func verifyCrash(t *testing.T, k int, p crashPoint, o Options, size int64) bool {
	t.Helper()
	o.ReadOnly = false
	var before *memdev.Dev // the clone as it crashed: opening it changes it
	if k%crashQemuEvery == 0 && testkit.HaveQemu() {
		before = p.dev.Clone()
	}
	im, ok := reopenCrash(t, k, p.dev, o)
	if im == nil {
		return ok
	}
	if !verifyCrashOpen(t, k, p, im, size) {
		im.Close()
		return false
	}
	if err := im.Close(); err != nil {
		t.Errorf("crash point %d: close after recovery: %v", k, err)
		return false
	}
	if before == nil {
		return true
	}
	return qemuCheckCrash(t, k, before, o, false) && qemuCheckCrash(t, k, p.dev, o, true)
}

// qemuCheckCrash runs qemu-img check on crash point k's image d, as the
// crash left it (leaks allowed) or after the engine's recovery (clean).
func qemuCheckCrash(t *testing.T, k int, d *memdev.Dev, o Options, recovered bool) bool {
	t.Helper()
	return qemuCheckCrashAlso(t, k, d, o, recovered, nil)
}

// qemuCheckCrashAlso is qemuCheckCrash accepting as well the results
// also accepts (nil: none), for a test that leaves a damage of its own
// in the image (qemuMissingCopiedOnly).
func qemuCheckCrashAlso(t *testing.T, k int, d *memdev.Dev, o Options, recovered bool, also func(testkit.QemuCheckResult) bool) bool {
	t.Helper()
	var h [80]byte
	if err := d.Readv(0, [][]byte{h[:]}); err != nil {
		t.Errorf("crash point %d: %v", k, err)
		return false
	}
	if !recovered && binary.BigEndian.Uint32(h[4:]) >= 3 && binary.BigEndian.Uint64(h[72:])&format.IncompatDirty != 0 {
		return true // qemu-img check reports a dirty image's stale refcounts by design
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("crash-%d.qcow2", k))
	if err := d.WriteFile(path); err != nil {
		t.Errorf("crash point %d: %v", k, err)
		return false
	}
	verdict, what := testkit.QemuCheckResult.NoCorruption, "as it crashed"
	if recovered {
		verdict, what = testkit.QemuCheckResult.Clean, "after the engine's recovery"
	}
	ok := verdict
	if also != nil {
		ok = func(r testkit.QemuCheckResult) bool { return verdict(r) || also(r) }
	}
	var err error
	if o.Passphrase != nil {
		err = testkit.QemuCheckSecretReport(path, string(o.Passphrase), ok)
	} else {
		err = testkit.QemuCheckReport(path, ok)
	}
	if err != nil {
		t.Errorf("crash point %d: qemu-img check of the image %s: %v", k, what, err)
		return false
	}
	os.Remove(path)
	return true
}

// qemuMissingCopiedOnly accepts a qemu-img check whose only errors are
// OFLAG_COPIED flags missing on counts of 1 (onlyMissingCopied), leaks
// aside: the damage a test that clears COPIED itself leaves (a copy
// more, QEMU repairs it with -r all), never a flag on a shared cluster.
func qemuMissingCopiedOnly(r testkit.QemuCheckResult) bool {
	return r.Exit == 2 && r.CheckErrors == 0 && onlyMissingCopied(strings.Split(r.Stderr, "\n"))
}

// verifyCrashOpen verifies crash point k's image, open as im.
func verifyCrashOpen(t *testing.T, k int, p crashPoint, im *Image, size int64) bool {
	t.Helper()
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
		i := testkit.FirstDiff(got[lo:hi], p.flushed[lo:hi])
		if i < 0 {
			continue
		}
		vals, wrote := p.held[s]
		if !wrote {
			t.Errorf("crash point %d: flushed data lost at offset %d", k, lo+int64(i))
			return false
		}
		if i := neverHeld(got[lo:hi], p.flushed[lo:hi], vals); i >= 0 {
			t.Errorf("crash point %d: unflushed sector at offset %d holds a byte it never held since the flush: got %#x at %d (flushed %#x)", k, lo, got[lo+int64(i)], lo+int64(i), p.flushed[lo+int64(i)])
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
