package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Review 46 (crash consistency of fresh space, SP1-SP3, Q2, Q11): the
// crash tests elsewhere check that flushed data reads back; these check
// the sectors written since the last flush too. After a crash each of
// them must read as one of the values it held since that flush (the
// flushed one or a later write's, zeroing's or discard's), never bytes
// it never held: stale bytes of a reused host cluster, zeros of fresh
// space where a backing file's data was (or was written), or another
// cluster's data. Every write carries bytes unique to it and its guest
// offset, so no stale content can pass for an allowed one. Shrinks
// followed by growths are among the ops (Q18). Then each
// reopened clone goes on writing (the high-water mark, reserve and fill
// recomputed from the clone) and must read back exactly.

// r46Hist is the set of values each guest sector held since the last
// flush, as hashes (the first is the flushed value).
type r46Hist [][]uint64

var r46Seed = maphash.MakeSeed()

func r46Hash(b []byte) uint64 { return maphash.Bytes(r46Seed, b) }

// r46Data is n bytes for a write at guest offset off: every 8-byte word
// names the write (id) and its own guest offset.
func r46Data(id uint64, off int64, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], id<<40|uint64(off+int64(i))>>3)
	}
	return b
}

type r46Point struct {
	dev  *memdev.Dev
	hist r46Hist
	what string
}

type r46Recorder struct {
	dev   *hookDev
	model []byte
	hist  r46Hist
	pts   []r46Point
	what  string
}

// note records, before an op changes [off, off+n) of the model, the new
// values its sectors may hold (under the hook's lock: crash clones are
// taken there, from the filler's goroutines too).
func (r *r46Recorder) note(off, n int64, after []byte) {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	for s := off / crashSector; s < (off+n+crashSector-1)/crashSector; s++ {
		lo := s * crashSector
		sec := append([]byte(nil), r.model[lo:lo+crashSector]...)
		for i := max(lo, off); i < min(lo+crashSector, off+n); i++ {
			sec[i-lo] = after[i-off]
		}
		r.hist[s] = append(r.hist[s], r46Hash(sec))
	}
}

// setWhat names the op under way for the crash points taken during it,
// under the hook's lock (the filler's goroutines read it there).
func (r *r46Recorder) setWhat(what string) {
	r.dev.mu.Lock()
	r.what = what
	r.dev.mu.Unlock()
}

func (r *r46Recorder) flushed() {
	r.dev.mu.Lock()
	defer r.dev.mu.Unlock()
	for s := range r.hist {
		lo := int64(s) * crashSector
		r.hist[s] = []uint64{r46Hash(r.model[lo : lo+crashSector])}
	}
}

type r46Case struct {
	name    string
	co      CreateOptions
	o       Options
	backing bool
}

var r46Cases = []r46Case{
	{"default", CreateOptions{ClusterSize: 4096}, Options{}, false},
	{"prealloc-off", CreateOptions{ClusterSize: 4096}, Options{Prealloc: "off"}, false},
	{"backing", CreateOptions{ClusterSize: 4096}, Options{}, true},
	{"backing-fill", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, true},
	{"fill-zeroes", CreateOptions{ClusterSize: 4096}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false},
	{"fill-c64k", CreateOptions{}, Options{PreallocFill: FillZeroes, PreallocSize: 4 << 20}, false},
	{"lazy", CreateOptions{ClusterSize: 4096, LazyRefcounts: true}, Options{}, false},
	{"lazy-backing", CreateOptions{ClusterSize: 4096, LazyRefcounts: true}, Options{}, true},
	{"xl2-backing", CreateOptions{ClusterSize: 32 << 10, ExtendedL2: true}, Options{}, true},
	{"xl2-fill", CreateOptions{ClusterSize: 32 << 10, ExtendedL2: true}, Options{PreallocFill: FillZeroes, PreallocSize: 2 << 20}, false},
	{"c512-r64", CreateOptions{ClusterSize: 512, RefcountBits: 64}, Options{}, false},
}

const r46Size = 2 << 20

// TestReview46_CrashUnflushedOldOrNew: after a crash, every sector reads
// one of the values it held since the last flush, and the reopened clone
// takes new writes (reserve and fill included) and reads them back.
func TestReview46_CrashUnflushedOldOrNew(t *testing.T) {
	t.Parallel()
	r46RunCrashCases(t, r46Cases, crashPoints(40, 12), true, r46Workload)
}

// r46WorkloadFunc runs a review workload on a new image, cloning the
// device before the device ops want picks.
type r46WorkloadFunc func(t *testing.T, seed uint64, co CreateOptions, o Options, bdata []byte, want func(int) bool) []r46Point

// r46RunCrashCases runs workload for each case twice, to count its device
// ops and then with about points crash clones spread over them, and
// verifies each clone (r46Verify), failing after more than three bad
// ones. Every crashQemuEvery-th clone goes through qemu-img check too:
// as the crash left it, leaks allowed (and, when the workload takes and
// deletes snapshots, OFLAG_COPIED errors: r46QemuCheckCopied), and
// after r46Verify's recovery (which repairs such errors), writes and
// close and the engine's leak repair, clean.
func r46RunCrashCases(t *testing.T, cases []r46Case, points int, snapshots bool, workload r46WorkloadFunc) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seed := testkit.Rand(t).Uint64()
			o := tc.o
			var bdata []byte
			if tc.backing {
				bdata = r46Data(1, 0, r46Size)
				o.Backing = memdev.FromBytes(bdata, memdev.Options{})
			}
			nops := len(workload(t, seed, tc.co, o, bdata, func(int) bool { return false }))
			step := max(1, nops/points)
			pts := workload(t, seed, tc.co, o, bdata, func(i int) bool { return i%step == 0 })
			bad, tried, qemu := 0, 0, 0
			for k, p := range pts {
				if p.dev == nil {
					continue
				}
				var before *memdev.Dev // the clone as it crashed: r46Verify changes it
				if tried%crashQemuEvery == 0 && testkit.HaveQemu() {
					before = p.dev.Clone()
				}
				tried++
				ok := r46Verify(t, k, p, o, seed)
				if ok && before != nil {
					qemu++
					if snapshots {
						ok = r46QemuCheckCopied(t, k, before)
					} else {
						ok = qemuCheckCrash(t, k, before, o, false)
					}
					ok = ok && qemuCheckRepaired(t, k, p.dev, o)
				}
				if !ok {
					if bad++; bad > 3 {
						t.Fatalf("too many failing crash points")
					}
				}
			}
			t.Logf("%d crash points, %d of them through qemu-img check", tried, qemu)
		})
	}
}

// r46QemuCheckCopied is qemuCheckCrash of crash point k's image dev as
// the crash left it, for a workload that takes and deletes snapshots: a
// crash inside one may leave COPIED flags out of step with the counts, as
// in QEMU (verifySnapCrash), so besides leaks qemu-img check may report
// OFLAG_COPIED errors and no other. (Not qemuRepairCrash: after
// qemu-img check -r all the engine's Check still finds the leaks a crash
// leaves past the end of the file, where qemu-img does not look.)
func r46QemuCheckCopied(t *testing.T, k int, dev *memdev.Dev) bool {
	t.Helper()
	var h [80]byte
	if err := dev.Readv(0, [][]byte{h[:]}); err != nil {
		t.Errorf("crash point %d: %v", k, err)
		return false
	}
	if binary.BigEndian.Uint32(h[4:]) >= 3 && binary.BigEndian.Uint64(h[72:])&format.IncompatDirty != 0 {
		return true // qemu-img check reports a dirty image's stale refcounts by design
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("crash-%d.qcow2", k))
	if err := dev.WriteFile(path); err != nil {
		t.Errorf("crash point %d: %v", k, err)
		return false
	}
	ok := func(r testkit.QemuCheckResult) bool {
		if r.NoCorruption() {
			return true
		}
		if r.Exit != 2 || r.CheckErrors != 0 {
			return false
		}
		for _, l := range strings.Split(r.Stderr, "\n") {
			if strings.HasPrefix(l, "ERROR") && !strings.HasPrefix(l, "ERROR OFLAG_COPIED") {
				return false
			}
		}
		return true
	}
	if err := testkit.QemuCheckReport(path, ok); err != nil {
		t.Errorf("crash point %d: qemu-img check of the image as it crashed (leaks and OFLAG_COPIED errors allowed): %v", k, err)
		return false
	}
	return true
}

// newR46Recorder creates an image with co (at r46Size) on mem, and a
// recorder over it whose model starts as bdata (or zeros) and which
// clones mem before each device op want picks (stream seeds the
// clones' random choices).
func newR46Recorder(t *testing.T, mem *memdev.Dev, seed, stream uint64, co CreateOptions, bdata []byte, want func(int) bool) *r46Recorder {
	t.Helper()
	co.Size = r46Size
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	r := &r46Recorder{dev: &hookDev{Dev: mem}, model: make([]byte, r46Size), hist: make(r46Hist, r46Size/crashSector)}
	if bdata != nil {
		copy(r.model, bdata)
	}
	crng := rand.New(rand.NewPCG(seed, stream))
	r.dev.before = func() {
		var p r46Point
		if want(len(r.pts)) {
			p = r46Point{dev: mem.CrashClone(crng, crng.Float64()), hist: append(r46Hist(nil), r.hist...), what: r.what}
		}
		r.pts = append(r.pts, p)
	}
	return r
}

func r46Workload(t *testing.T, seed uint64, co CreateOptions, o Options, bdata []byte, want func(int) bool) []r46Point {
	rng := rand.New(rand.NewPCG(seed, 46))
	r := newR46Recorder(t, memdev.New(memdev.Options{}), seed, 47, co, bdata, want)
	r.flushed()
	im, err := OpenDevice(r.dev, o)
	if err != nil {
		t.Fatal(err)
	}
	cs := int64(im.Geometry().ClusterSize)
	const sec = crashSector
	id := uint64(2)
	for i := 0; i < 140; i++ {
		switch op := rng.IntN(100); {
		case op < 62:
			n := (1 + rng.Int64N(24)) * sec
			off := rng.Int64N((r46Size-n)/sec) * sec
			if i < 50 { // allocating writes in guest order, then anywhere
				off = (int64(i) * 2 * cs) % (r46Size - n) / sec * sec
			}
			b := r46Data(id, off, int(n))
			id++
			r.note(off, n, b)
			if _, err := im.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			copy(r.model[off:], b)
		case op < 72:
			n := (1 + rng.Int64N(3*cs/sec)) * sec
			off := rng.Int64N((r46Size-n)/sec) * sec
			r.note(off, n, make([]byte, n))
			if err := im.WriteZeroes(off, n, block.Flags(rng.IntN(2))*block.MayUnmap); err != nil {
				t.Fatal(err)
			}
			clear(r.model[off : off+n])
		case op < 88 && op >= 85:
			// A compressed cluster (Q13) where the guest cluster is
			// free, or a snapshot taken or deleted (COW of shared
			// clusters, clusters freed and reused).
			if op == 85 {
				off := rng.Int64N(r46Size/cs) * cs
				b := r46Data(id, off, int(cs))
				id++
				r.note(off, cs, b)
				if err := im.WriteCompressed(off, b); err == nil {
					copy(r.model[off:], b)
				} else if !errors.Is(err, ErrNotCompressible) {
					t.Fatal(err)
				}
			} else if len(im.Snapshots()) == 0 {
				if _, err := im.CreateSnapshot("r46"); err != nil {
					t.Fatal(err)
				}
			} else if err := im.DeleteSnapshot("r46"); err != nil {
				t.Fatal(err)
			}
		case op < 85 && op >= 82 && i > 50 && len(im.Snapshots()) == 0:
			// Shrink then grow back (Q18): the cut range reads as zeros
			// after, whatever lay there (data, backing file).
			cut := r46Size/2 + rng.Int64N(r46Size/2/sec)*sec
			r.note(cut, r46Size-cut, make([]byte, r46Size-cut))
			if bdata != nil {
				// A crash inside Shrink, after its full discard and
				// before the header's new size, leaves the old size
				// with the cut range unallocated: the backing file
				// shows there, as after the same crash in QEMU
				// (qcow2_co_truncate: discard, then the header).
				r.note(cut, r46Size-cut, bdata[cut:])
			}
			r.setWhat("shrink")
			if err := im.Shrink(cut); err != nil {
				t.Fatal(err)
			}
			r.setWhat("grow")
			if err := im.Truncate(r46Size); err != nil {
				t.Fatal(err)
			}
			r.setWhat("")
			clear(r.model[cut:])
		case op < 82:
			c := rng.Int64N(r46Size/cs - 2)
			r.note(c*cs, 2*cs, make([]byte, 2*cs))
			if err := im.Discard(c*cs, 2*cs); err != nil {
				t.Fatal(err)
			}
			clear(r.model[c*cs : (c+2)*cs])
		default:
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			r.flushed()
		}
	}
	im.waitFillIdle()
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	return r.pts
}

// r46Verify reopens crash point k: it must check clean (leaks allowed),
// every sector must read a value it held since the last flush, and new
// writes on it must read back.
func r46Verify(t *testing.T, k int, p r46Point, o Options, seed uint64) bool {
	t.Helper()
	im, ok := reopenCrash(t, k, p.dev, o)
	if im == nil {
		return ok
	}
	defer im.Close()
	r, err := im.Check(CheckOptions{})
	if err == nil && r.CheckErrors == 0 && r.Corruptions != 0 && onlyCopied(r.Messages) {
		// A crash inside a snapshot's create or delete may leave COPIED
		// out of step with the counts, as in QEMU (verifySnapCrash says
		// more); -r all repairs it.
		if r, err = im.Check(CheckOptions{Repair: RepairAll}); err == nil {
			r, err = im.Check(CheckOptions{})
		}
	}
	if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
		t.Errorf("crash point %d: check: %v corruptions=%d errors=%d %v", k, err, r.Corruptions, r.CheckErrors, head(r.Messages, 5))
		return false
	}
	if sz, err := im.Size(); err != nil {
		t.Fatal(err)
	} else if sz < r46Size { // a crash between a Shrink and its growth
		if err := im.Truncate(r46Size); err != nil {
			t.Errorf("crash point %d: growing back from %d: %v", k, sz, err)
			return false
		}
	}
	got := testkit.ReadAll(t, im)
	for s := range p.hist {
		lo := int64(s) * crashSector
		h := r46Hash(got[lo : lo+crashSector])
		found := false
		for _, v := range p.hist[s] {
			found = found || v == h
		}
		if !found {
			t.Errorf("crash point %d (%s): sector at %d reads a value it never held since the last flush (of %d allowed): % x", k, p.what, lo, len(p.hist[s]), got[lo:lo+32])
			return false
		}
	}
	// Go on writing on the clone: new clusters and overwrites, the
	// reserve and the fill start again from the clone's size.
	rng := rand.New(rand.NewPCG(seed, uint64(k)))
	for i := 0; i < 24; i++ {
		n := (1 + rng.Int64N(16)) * crashSector
		off := rng.Int64N((r46Size-n)/crashSector) * crashSector
		b := r46Data(uint64(1<<20+i), off, int(n))
		if _, err := im.WriteAt(b, off); err != nil {
			t.Errorf("crash point %d: write after reopen: %v", k, err)
			return false
		}
		copy(got[off:], b)
	}
	im.waitFillIdle()
	if err := im.Flush(); err != nil {
		t.Errorf("crash point %d: flush after reopen: %v", k, err)
		return false
	}
	if i := testkit.FirstDiff(testkit.ReadAll(t, im), got); i >= 0 {
		t.Errorf("crash point %d: after writes on the reopened clone: differs at %d", k, i)
		return false
	}
	if r, err := im.Check(CheckOptions{}); err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
		t.Errorf("crash point %d: check after writes: %v %v", k, err, head(r.Messages, 5))
		return false
	}
	return true
}

// r46NewImage creates tc's image (r46Size) on a new memdev, and returns
// it with the options to open it (tc's, with a backing file of
// r46Data(1, ...) when tc has one) and the guest view it starts with.
func r46NewImage(t *testing.T, tc r46Case) (*memdev.Dev, Options, []byte) {
	t.Helper()
	o := tc.o
	model := make([]byte, r46Size)
	if tc.backing {
		bdata := r46Data(1, 0, r46Size)
		copy(model, bdata)
		o.Backing = memdev.FromBytes(bdata, memdev.Options{})
	}
	co := tc.co
	co.Size = r46Size
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, co); err != nil {
		t.Fatal(err)
	}
	return mem, o, model
}
