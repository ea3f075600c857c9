package qcow2

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Writes to images with an external data file (DF4-DF6): crash clones
// of both devices taken at the same moment, and QEMU reading what we
// write (and us writing what QEMU wrote).

// dfMemImage creates an image of co on a new memdev with an external
// data file named "d.raw" (raw: data_file_raw) and returns it with an
// empty data memdev of the disk's size. With raw every cluster is linked
// in place, as Create does (QEMU's metadata preallocation).
func dfMemImage(t *testing.T, co CreateOptions, raw bool) (img, data *memdev.Dev) {
	t.Helper()
	img = memdev.New(memdev.Options{})
	co.DataFile, co.DataFileRaw = "d.raw", raw
	if err := CreateDevice(img, co); err != nil {
		t.Fatal(err)
	}
	data = memdev.New(memdev.Options{})
	if err := data.Truncate(co.Size); err != nil {
		t.Fatal(err)
	}
	if raw {
		im, err := OpenDevice(img, Options{DataDevice: data})
		if err != nil {
			t.Fatal(err)
		}
		if err := im.dfLinkRange(0, co.Size); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	return img, data
}

// pairHook serialises the mutating ops of an image's two devices and
// calls before() ahead of each: a crash clone taken there clones both
// at the same moment.
type pairHook struct {
	mu     sync.Mutex
	before func()
}

type pairDev struct {
	*memdev.Dev
	h *pairHook
}

func (d *pairDev) hook() func() {
	d.h.mu.Lock()
	d.h.before()
	return d.h.mu.Unlock
}

func (d *pairDev) Writev(off int64, b [][]byte) error {
	defer d.hook()()
	return d.Dev.Writev(off, b)
}

func (d *pairDev) WriteZeroes(off, n int64, f block.Flags) error {
	defer d.hook()()
	return d.Dev.WriteZeroes(off, n, f)
}

func (d *pairDev) Flush() error {
	defer d.hook()()
	return d.Dev.Flush()
}

func (d *pairDev) Truncate(n int64) error {
	defer d.hook()()
	return d.Dev.Truncate(n)
}

func (d *pairDev) Close() error { return nil }

// dfCrashPoint is a crash clone of both devices and what the guest may
// rely on there.
type dfCrashPoint struct {
	img, data *memdev.Dev
	flushed   []byte
	touched   []bool
	held      [][][]byte // per touched sector: the values it was given since the flush
}

// TestDataFile_CrashClones crashes a workload of writes (first and
// partial ones), zero writes, discards and flushes at every device op of
// either file, cloning the image and the data file at the same moment:
// each clone pair opens, checks without corruption (leaks allowed) and
// reads back every sector flushed and not written since. A small L2
// cache and new L2 tables (1 KiB clusters: 8 tables) write entries back
// between flushes, so a link that reached the media before its data
// (DF5) shows as a cluster's untouched sectors reading stale bytes (a
// discarded cluster's, or zeros where the backing file has data): the
// backing case fails so within three runs without DF5's flush.
func TestDataFile_CrashClones(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		raw     bool
		backing bool
		xl2     bool
	}{{"plain", false, false, false}, {"raw", true, false, false}, {"backing", false, true, false},
		{"xl2", false, false, true}, {"xl2-raw", true, false, true}, {"xl2-backing", false, true, true}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seed := testkit.Rand(t).Uint64()
			o := Options{L2CacheSize: 1024, L2CacheEntrySize: 512}
			// 1 KiB clusters: 8 L2 tables, so new ones write the cache
			// back. Extended L2 (16 KiB clusters and up: 512-byte
			// subclusters) has one table; a cache of one 512-byte
			// slice (32 entries) of its 2 writes back on evictions.
			co := CreateOptions{Size: dfCrashSize, ClusterSize: 1024}
			if tc.xl2 {
				co = CreateOptions{Size: dfCrashSize, ClusterSize: 16 << 10, ExtendedL2: true}
				o.L2CacheSize, o.L2CacheEntrySize = 512, 512
			}
			if tc.backing {
				bdata := make([]byte, dfCrashSize)
				for i := range bdata {
					bdata[i] = byte(i/512) | 1
				}
				o.Backing = memdev.FromBytes(bdata, memdev.Options{})
			}
			nops := len(dfCrashWorkload(t, seed, co, tc.raw, o, func(int) bool { return false }))
			step := max(1, nops/crashPoints(120, 40))
			pts := dfCrashWorkload(t, seed, co, tc.raw, o, func(i int) bool { return i%step == 0 })
			tried, bad, qemu := 0, 0, 0
			for k, p := range pts {
				if p.img == nil {
					continue
				}
				// Every crashQemuEvery-th point goes through qemu-img
				// check too, as the crash left it and after the
				// recovery (the leak repair of dfVerifyCrash).
				var img, data *memdev.Dev
				if tried%crashQemuEvery == 0 && testkit.HaveQemu() {
					img, data = p.img.Clone(), p.data.Clone()
				}
				tried++
				ok := dfVerifyCrash(t, k, p, o)
				if ok && img != nil {
					qemu++
					what := fmt.Sprintf("crash point %d", k)
					ok = dfQemuCheckCrash(t, what, img, data, false) && dfQemuCheckCrash(t, what, p.img, p.data, true)
				}
				if !ok {
					if bad++; bad > 3 {
						t.Fatal("too many failing crash points")
					}
				}
			}
			t.Logf("%d device ops, %d crash points tried, %d of them through qemu-img check", nops, tried, qemu)
		})
	}
}

const dfCrashSize = 1 << 20

// dfCrashWorkload runs a seeded workload on a data file image and
// returns one point per mutating device op of either file, with clones
// where want(i).
func dfCrashWorkload(t *testing.T, seed uint64, co CreateOptions, raw bool, o Options, want func(int) bool) []dfCrashPoint {
	t.Helper()
	imgMem, dataMem := dfMemImage(t, co, raw)
	var model []byte
	if o.Backing != nil && !raw {
		model = make([]byte, dfCrashSize)
		if err := block.ReadAt(o.Backing, model, 0); err != nil {
			t.Fatal(err)
		}
	} else {
		model = make([]byte, dfCrashSize)
	}
	flushed := append([]byte(nil), model...)
	touched := make([]bool, dfCrashSize/crashSector)
	held := make([][][]byte, dfCrashSize/crashSector)
	var pts []dfCrashPoint
	h := &pairHook{}
	crng := rand.New(rand.NewPCG(seed, 1))
	h.before = func() {
		var p dfCrashPoint
		if want(len(pts)) {
			p = dfCrashPoint{
				img:     imgMem.CrashClone(crng, crng.Float64()),
				data:    dataMem.CrashClone(crng, crng.Float64()),
				flushed: append([]byte(nil), flushed...),
				touched: append([]bool(nil), touched...),
				held:    make([][][]byte, len(held)),
			}
			for s := range held {
				p.held[s] = append([][]byte(nil), held[s]...)
			}
		}
		pts = append(pts, p)
	}
	io := o
	io.DataDevice = &pairDev{dataMem, h}
	im, err := OpenDevice(&pairDev{imgMem, h}, io)
	if err != nil {
		t.Fatal(err)
	}
	// touch records, before an op runs, the value each sector it
	// changes will hold (the model with apply done): a crash may show
	// any value a sector held since the last flush (old or new).
	touch := func(off, n int64, apply func(w []byte, at int64)) {
		at := off / crashSector * crashSector
		end := (off + n + crashSector - 1) / crashSector * crashSector
		w := append([]byte(nil), model[at:end]...)
		apply(w, at)
		h.mu.Lock()
		for s := off / crashSector; s <= (off+n-1)/crashSector; s++ {
			touched[s] = true
			p := s*crashSector - at
			held[s] = append(held[s], w[p:p+crashSector])
		}
		h.mu.Unlock()
	}
	zeros := func(off, n int64) func([]byte, int64) {
		return func(w []byte, at int64) { clear(w[off-at : off-at+n]) }
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	cs := int64(co.ClusterSize)
	for op := 0; op < 150; op++ {
		switch r := rng.IntN(20); {
		case r < 11:
			// A write: sector aligned, inside a cluster or across two.
			off := rng.Int64N(dfCrashSize/crashSector) * crashSector
			n := min(int64(1+rng.IntN(int(2*cs/crashSector)))*crashSector, dfCrashSize-off)
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(op + 1)
			}
			touch(off, n, func(w []byte, at int64) { copy(w[off-at:], b) })
			if _, err := im.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], b)
		case r < 14:
			off := rng.Int64N(dfCrashSize/crashSector) * crashSector
			n := min(int64(1+rng.IntN(int(3*cs/crashSector)))*crashSector, dfCrashSize-off)
			var f block.Flags
			if rng.IntN(2) == 0 {
				f = block.MayUnmap
			}
			touch(off, n, zeros(off, n))
			if err := im.WriteZeroes(off, n, f); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		case r < 17:
			// Whole clusters: a discard reads as zeros after (v3).
			c := rng.Int64N(dfCrashSize / cs)
			n := min(int64(1+rng.IntN(3))*cs, dfCrashSize-c*cs)
			touch(c*cs, n, zeros(c*cs, n))
			if err := im.Discard(c*cs, n); err != nil {
				t.Fatal(err)
			}
			clear(model[c*cs : c*cs+n])
		default:
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			h.mu.Lock()
			copy(flushed, model)
			clear(touched)
			clear(held)
			h.mu.Unlock()
		}
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "the image before the close")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return pts
}

// dfVerifyCrash opens crash point k's clones: no corruption, every
// sector flushed and untouched since reads as flushed, and every byte of
// a touched one reads a value it held since the flush (old or new).
func dfVerifyCrash(t *testing.T, k int, p dfCrashPoint, o Options) bool {
	t.Helper()
	o.DataDevice = p.data
	o.L2CacheSize, o.L2CacheEntrySize = 0, 0
	im, err := OpenDevice(p.img, o)
	if err != nil {
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
	for s := range p.touched {
		lo, hi := int64(s)*crashSector, int64(s+1)*crashSector
		if p.touched[s] {
			if i := neverHeld(got[lo:hi], p.flushed[lo:hi], p.held[s]); i >= 0 {
				t.Errorf("crash point %d: offset %d reads %#x, a value it never held since the flush", k, lo+int64(i), got[lo+int64(i)])
				return false
			}
			continue
		}
		if i := testkit.FirstDiff(got[lo:hi], p.flushed[lo:hi]); i >= 0 {
			t.Errorf("crash point %d: flushed data lost at offset %d", k, lo+int64(i))
			return false
		}
	}
	if r.Leaks > 0 {
		if r, err = im.Check(CheckOptions{Repair: RepairLeaks}); err != nil || !r.Clean() {
			t.Errorf("crash point %d: leak repair: %v %+v", k, err, r)
			return false
		}
	}
	return true
}

// dfQemuCheckCrash runs qemu-img check on an image with an external
// data file, img and data, as a crash left it (leaks allowed; not a dirty
// lazy-refcounts image, whose refcounts QEMU repairs at open, as
// qemuCheckCrash) or after the engine's recovery (clean). qemu-img opens
// the data file the header names beside the image, so both go into a
// new directory, the data file under that name. A corruption, a check
// error or an ERROR line fails t (a failing pair is kept). Without
// qemu-img it returns true.
func dfQemuCheckCrash(t *testing.T, what string, img, data *memdev.Dev, recovered bool) bool {
	t.Helper()
	if !testkit.HaveQemu() {
		return true
	}
	sz, err := img.Size()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	hb := make([]byte, min(sz, 2<<20)) // cluster 0, whatever its size
	if err := img.Readv(0, [][]byte{hb}); err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	h, err := format.ParseHeader(hb)
	if err != nil {
		t.Errorf("%s: the header: %v", what, err)
		return false
	}
	if h.DataFile == "" || filepath.Base(h.DataFile) != h.DataFile {
		t.Errorf("%s: the header names data file %q, not a file beside the image", what, h.DataFile)
		return false
	}
	if !recovered && h.Version >= 3 && h.IncompatibleFeatures&format.IncompatDirty != 0 {
		return true // qemu-img check reports a dirty image's stale refcounts by design
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "crash.qcow2")
	if err := img.WriteFile(path); err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	if err := data.WriteFile(filepath.Join(dir, h.DataFile)); err != nil {
		t.Errorf("%s: %v", what, err)
		return false
	}
	verdict, state := testkit.QemuCheckResult.NoCorruption, "as it crashed"
	if recovered {
		verdict, state = testkit.QemuCheckResult.Clean, "after the engine's recovery"
	}
	// QEMU 7.2 opens a relative data file name from its working
	// directory, not from the image's: qemu-img runs in dir.
	var o, e bytes.Buffer
	cmd := exec.Command("qemu-img", "check", "--output=json", "-f", "qcow2", "crash.qcow2")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &o, &e
	var r testkit.QemuCheckResult
	err = cmd.Run()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		r.Exit, err = ee.ExitCode(), nil
	}
	r.Stdout, r.Stderr = o.String(), e.String()
	if err == nil {
		if jerr := json.Unmarshal(o.Bytes(), &r); jerr != nil {
			err = fmt.Errorf("exit %d, no JSON (%v):\n%s%s", r.Exit, jerr, r.Stdout, r.Stderr)
		} else if !verdict(r) || strings.Contains(r.Stderr, "ERROR") {
			err = fmt.Errorf("%s\n%s", r, r.Stderr)
		}
	}
	if err != nil {
		kept := testkit.KeepFile(t, "crash.qcow2", img.Bytes())
		if err := data.WriteFile(filepath.Join(filepath.Dir(kept), h.DataFile)); err != nil {
			t.Log(err)
		}
		t.Errorf("%s: qemu-img check of the image %s: %v\nimage kept at %s, its data file beside it", what, state, err, kept)
		return false
	}
	return true
}

// TestDataFile_Refusals: what QEMU 7.2 refuses on an image with a data
// file (compressed writes, internal snapshots, a downgrade) is refused
// with ErrUnsupported (DF6).
func TestDataFile_Refusals(t *testing.T) {
	t.Parallel()
	img, data := dfMemImage(t, CreateOptions{Size: 1 << 20, ClusterSize: 4096}, false)
	im, err := OpenDevice(img, Options{DataDevice: data})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.WriteCompressed(0, make([]byte, 4096)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("compressed write: %v", err)
	}
	if _, err := im.CreateSnapshot("s"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("snapshot: %v", err)
	}
	if err := im.SetVersion(2); !errors.Is(err, ErrUnsupported) {
		t.Errorf("downgrade: %v", err)
	}
	if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("check: %v %+v", err, r)
	}
}

// dfOp is one guest operation of TestDataFile_WritesLikeQemu, applied to
// our image and to the model.
type dfOp struct {
	kind   byte // 'w' write, 'z' zero write, 'u' zero write with unmap, 'd' discard
	off, n int64
}

var dfOps = []dfOp{
	{'w', 0, 512},              // the first cluster: offset 0 in the data file (DF2)
	{'w', 70 << 10, 1000},      // a partial first write
	{'w', 128 << 10, 64 << 10}, // a whole cluster
	{'w', 60 << 10, 200 << 10}, // across clusters, allocated and not
	{'z', 300 << 10, 64 << 10},
	{'u', 384 << 10, 128 << 10},
	{'z', 1 << 10, 2 << 10}, // part of an allocated cluster
	{'d', 128 << 10, 64 << 10},
	{'w', 130 << 10, 4 << 10}, // into the discarded cluster again
	{'d', 0, 64 << 10},
	{'w', 8 << 10, 512},
	{'w', 1<<20 - 700, 700}, // the last cluster, partial
}

// applyDfOps runs ops on im and on model.
func applyDfOps(t *testing.T, im *Image, model []byte, ops []dfOp) {
	t.Helper()
	for i, op := range ops {
		var err error
		switch op.kind {
		case 'w':
			b := bytes.Repeat([]byte{byte(0x40 + i)}, int(op.n))
			_, err = im.WriteAt(b, op.off)
			copy(model[op.off:], b)
		case 'z', 'u':
			f := block.Flags(0)
			if op.kind == 'u' {
				f = block.MayUnmap
			}
			err = im.WriteZeroes(op.off, op.n, f)
			clear(model[op.off : op.off+op.n])
		case 'd':
			err = im.Discard(op.off, op.n)
			clear(model[op.off : op.off+op.n])
		}
		if err != nil {
			t.Fatalf("op %d %c: %v", i, op.kind, err)
		}
	}
}

// TestDataFile_WritesLikeQemu: images qemu-img creates with a data file
// (raw or not, over a backing file, written by qemu-io first) are
// written by us, pass qemu-img check and read back through qemu-img
// convert as our model says; a raw data file is the disk's raw image
// (before any discard, which QEMU leaves in it too); and qemu-io reads
// and writes them after us.
func TestDataFile_WritesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	cases := []struct {
		name, opts string
		backing    bool
		io         []string
	}{
		{"plain", "", false, nil},
		{"raw", "data_file_raw=on", false, nil},
		{"qemu-written", "", false, []string{"write -P 0x11 0 100k", "write -z 256k 64k", "write -P 0x12 900k 5000"}},
		{"raw-qemu-written", "data_file_raw=on", false, []string{"write -P 0x11 0 100k", "discard 192k 64k"}},
		{"backing", "", true, nil},
		{"c4k", "cluster_size=4096", false, []string{"write -P 0x13 4k 9k"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var img, data string
			if tc.backing {
				dir := testkit.Dir(t)
				base := filepath.Join(dir, "base.qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
				testkit.MustRun(t, "qemu-io", "-c", "write -P 0x21 0 1M", base)
				img, data = filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "d.raw")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data, "-b", base, "-F", "qcow2", img, "1M")
			} else {
				img, data = dataFileImage(t, tc.opts, "1M", tc.io...)
			}
			model := qemuRaw(t, img)
			im, err := Open(img, Options{})
			if err != nil {
				t.Fatal(err)
			}
			applyDfOps(t, im, model, dfOps[:len(dfOps)-3])
			testkit.MustEqual(t, testkit.ReadAll(t, im), model, "our read-back before discards")
			if tc.opts == "data_file_raw=on" && tc.io == nil {
				raw, err := os.ReadFile(data)
				if err != nil {
					t.Fatal(err)
				}
				testkit.MustEqual(t, raw, model, "the raw data file before discards")
			}
			applyDfOps(t, im, model, dfOps[len(dfOps)-3:])
			testkit.MustEqual(t, testkit.ReadAll(t, im), model, "our read-back")
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			testkit.QemuCheck(t, img)
			testkit.MustEqual(t, qemuRaw(t, img), model, "qemu-img convert")
			dataFileSameMap(t, img)
			// QEMU writes after us, and we read what it wrote.
			testkit.MustRun(t, "qemu-io", "-c", "write -P 0x55 32k 64k", "-c", "write -z 900k 4k", img)
			copy(model[32<<10:], bytes.Repeat([]byte{0x55}, 64<<10))
			clear(model[900<<10 : 904<<10])
			ro := openReadOnly(t, img)
			testkit.MustEqual(t, testkit.ReadAll(t, ro), model, "our read of QEMU's writes")
			ro.Close()
		})
	}
}

// TestDataFile_ResizeLikeQemu: a resize grows and shrinks the data file
// with the disk, and a raw data file's grown range, or one grown with a
// preallocation, is linked in place (the data file reaching the last
// cluster's end), as qemu-img resize does (DF6).
func TestDataFile_ResizeLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range []struct{ opts, prealloc string }{
		{"", ""}, {"data_file_raw=on", ""}, {"", PreallocMetadata}, {"", PreallocFull}, {"data_file_raw=on", PreallocFalloc},
		{"extended_l2=on", ""}, {"extended_l2=on,data_file_raw=on", ""}, {"extended_l2=on", PreallocMetadata},
	} {
		opts := c.opts
		img, data := dataFileImage(t, opts, "1M", "write -P 0x11 0 1M")
		twin, twinData := dataFileImage(t, opts, "1M", "write -P 0x11 0 1M")
		grow := []string{"resize", "-q", twin, "3000320"}
		if c.prealloc != "" {
			grow = append(grow[:2], "--preallocation="+c.prealloc, twin, "3000320")
		}
		testkit.MustRun(t, "qemu-img", grow...)
		im, err := Open(img, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := im.TruncatePrealloc(3000320, c.prealloc); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(data)
		tfi, terr := os.Stat(twinData)
		if err != nil || terr != nil || fi.Size() != tfi.Size() {
			t.Fatalf("%+v: grown data file size %v %v, QEMU's %v %v", c, fi.Size(), err, tfi.Size(), terr)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		if a, b := qemuMap(t, img), qemuMap(t, twin); !reflect.DeepEqual(a, b) {
			t.Fatalf("%+v: map after the growth %v, QEMU's %v", c, a, b)
		}
		testkit.MustRun(t, "qemu-img", "resize", "-q", "--shrink", twin, "2101248")
		if im, err = Open(img, Options{}); err != nil {
			t.Fatal(err)
		}
		if err := im.Shrink(2<<20 + 4096); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheck(t, img)
		fi, err = os.Stat(data)
		tfi, terr = os.Stat(twinData)
		if err != nil || terr != nil || fi.Size() != tfi.Size() {
			t.Fatalf("%q: data file size %v %v, QEMU's %v %v", opts, fi.Size(), err, tfi.Size(), terr)
		}
		want := make([]byte, 2<<20+4096)
		copy(want, bytes.Repeat([]byte{0x11}, 1<<20))
		testkit.MustEqual(t, qemuRaw(t, img), want, "qemu-img convert after the resizes")
		dataFileSameMap(t, img)
		if a, b := qemuMap(t, img), qemuMap(t, twin); !reflect.DeepEqual(a, b) {
			t.Fatalf("%q: map %v, QEMU's resize gives %v", opts, a, b)
		}
	}
}

// TestDataFile_LinkAfterData: an L2 write-back between a first write
// and the next Flush (an eviction, say) flushes the data file first
// (DF5): a crash that keeps the image file's writes and loses every
// unflushed write of the data file then leaves no entry linking a
// cluster whose bytes did not land. The cluster's bytes around the
// guest data come from the backing file, so a lost fill reads as zeros
// where the backing file has data.
func TestDataFile_LinkAfterData(t *testing.T) {
	t.Parallel()
	const size = 256 << 10
	bdata := bytes.Repeat([]byte{0x5a}, size)
	img, data := dfMemImage(t, CreateOptions{Size: size, ClusterSize: 4096}, false)
	im, err := OpenDevice(img, Options{DataDevice: data, Backing: memdev.FromBytes(bdata, memdev.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{0x11}, 512), 8192+1024); err != nil {
		t.Fatal(err)
	}
	// The L2 write-back an eviction does, and the image file's flush
	// (another table's Q4 flush, say).
	im.mu.Lock()
	err = im.l2c.Write()
	if err == nil {
		err = im.dev.Flush()
	}
	im.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	cimg, cdata := img.CrashClone(rng, 1), data.CrashClone(rng, 0)
	if !dfQemuCheckCrash(t, "the crash clone", cimg, cdata, false) {
		t.FailNow()
	}
	re, err := OpenDevice(cimg, Options{DataDevice: cdata, Backing: memdev.FromBytes(bdata, memdev.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	got := make([]byte, 4096)
	if _, err := re.ReadAt(got, 8192); err != nil {
		t.Fatal(err)
	}
	// The image file kept everything: the entry is there, and so must
	// the whole cluster be.
	want := bytes.Repeat([]byte{0x5a}, 4096)
	copy(want[1024:], bytes.Repeat([]byte{0x11}, 512))
	testkit.MustEqual(t, got, want, "the cluster after the crash")
}

// TestDataFile_CreateRefusals: the data_file options QEMU 7.2 refuses
// are refused before anything is created (ErrUnsupported).
func TestDataFile_CreateRefusals(t *testing.T) {
	t.Parallel()
	for _, co := range []CreateOptions{
		{Size: 1 << 20, DataFileRaw: true},
		{Size: 1 << 20, DataFile: "d.raw", Compat: "0.10"},
		{Size: 1 << 20, DataFile: "d.raw", DataFileRaw: true, BackingFile: "b.qcow2", BackingFormat: "qcow2"},
	} {
		if err := CreateDevice(memdev.New(memdev.Options{}), co); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%+v: %v, want ErrUnsupported", co, err)
		}
	}
}

// TestDataFile_EncryptedWritesLikeQemu: a LUKS image with a data file
// (ours, created with Create: QEMU's key derivation would take seconds)
// is written by us, every byte in the data file encrypted with its
// offset there as the sector number (partial sectors merged, a first
// write's zeros encrypted too), and QEMU checks it and reads it as our
// model says; then qemu-io writes it and we read that.
func TestDataFile_EncryptedWritesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	img, data := filepath.Join(dir, "e.qcow2"), filepath.Join(dir, "e.raw")
	if err := Create(img, CreateOptions{Size: 1 << 20, DataFile: data,
		Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte("pw"), Iterations: 1000}}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(img, Options{Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 1<<20)
	ops := append([]dfOp{{'w', 100, 300}, {'w', 70<<10 + 7, 5000}}, dfOps...)
	applyDfOps(t, im, model, ops)
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "our read-back")
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(data); err != nil || bytes.Contains(raw, bytes.Repeat([]byte{0x43}, 512)) {
		t.Fatalf("the data file holds plaintext (%v)", err)
	}
	testkit.QemuCheckSecret(t, img, "pw")
	conv := filepath.Join(dir, "conv.raw")
	testkit.MustRun(t, "qemu-img", append(append([]string{"convert"}, testkit.QemuSecretArgs(img, "pw")...), "-O", "raw", conv)...)
	testkit.MustEqual(t, mustReadFile(t, conv), model, "qemu-img convert")
	testkit.MustRun(t, "qemu-io", append(testkit.QemuSecretArgs(img, "pw"), "-c", "write -P 0x66 3000 70k")...)
	copy(model[3000:], bytes.Repeat([]byte{0x66}, 70<<10))
	ro, err := Open(img, Options{ReadOnly: true, Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	testkit.MustEqual(t, testkit.ReadAll(t, ro), model, "our read of QEMU's write")
}

func mustReadFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDataFile_CreateDeviceEncrypted: CreateDevice of a LUKS image with
// a data file (only named: the caller has the device) lays out the LUKS
// header without opening the data file, and the image is then written
// and read back through its data device.
func TestDataFile_CreateDeviceEncrypted(t *testing.T) {
	t.Parallel()
	img, data := memdev.New(memdev.Options{}), memdev.New(memdev.Options{})
	if err := CreateDevice(img, CreateOptions{Size: 1 << 20, ClusterSize: 4096, DataFile: "nowhere/d.raw",
		Encrypt: EncryptOptions{Format: "luks", Passphrase: []byte("pw"), Iterations: 1000}}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(img, Options{DataDevice: data, Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	model := make([]byte, 1<<20)
	applyDfOps(t, im, model, dfOps)
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "our read-back")
	if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("check: %v %+v", err, r)
	}
}

// TestDataFile_ResizePartialLikeQemu: a growth with preallocation from a
// size inside a cluster allocates that cluster as QEMU does, written
// whole: its data file bytes (left by a discard) do not show.
func TestDataFile_ResizePartialLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	io := []string{"write -P 0x22 983040 17408", "discard 983040 17408"}
	for _, opts := range []string{"", "extended_l2=on"} {
		dfResizePartial(t, opts, io)
	}
	// A growth inside the last cluster, which a write made the data
	// file hold whole: QEMU truncates the data file to the new size.
	img, data := dataFileImage(t, "", "100k", "write -P 1 70k 1k")
	im, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Truncate(110 << 10); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(data); err != nil || fi.Size() != 110<<10 {
		t.Fatalf("data file %v, want 110 KiB as qemu-img resize leaves it", err)
	}
	testkit.QemuCheck(t, img)
}

// dfResizePartial is TestDataFile_ResizePartialLikeQemu's growth with
// preallocation on an image created with opts and written by io: the
// map and the data file's size as qemu-img resize leaves its twin.
func dfResizePartial(t *testing.T, opts string, io []string) {
	t.Helper()
	img, data := dataFileImage(t, opts, "1000448", io...)
	twin, twinData := dataFileImage(t, opts, "1000448", io...)
	testkit.MustRun(t, "qemu-img", "resize", "-q", "--preallocation=metadata", twin, "2M")
	im, err := Open(img, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.TruncatePrealloc(2<<20, PreallocMetadata); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, img)
	testkit.MustEqual(t, qemuRaw(t, img), make([]byte, 2<<20), "qemu-img convert")
	if a, b := qemuMap(t, img), qemuMap(t, twin); !reflect.DeepEqual(a, b) {
		t.Fatalf("%q: map %v, QEMU's %v", opts, a, b)
	}
	if a, b := mustReadFile(t, data), mustReadFile(t, twinData); len(a) != len(b) {
		t.Fatalf("%q: data file of %d bytes, QEMU's %d", opts, len(a), len(b))
	}
	if opts != "" {
		sameL2(t, img, twin, 2<<20)
	}
}
