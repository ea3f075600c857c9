package qcow2

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// Crash clones of the paths that take back a refused snapshot's refcount
// increments (an L2 entry it cannot count; a refcount that would
// overflow) and of the writable open that drops a stale bitmaps
// extension: at every device operation, several clones each, reopened
// and checked by our Check and qemu-img check. Leaks are allowed; a new
// error is not, OFLAG_COPIED ones included: the undo once flushed the
// slices the walk had cleared over counts back at 1 before setting the
// flags again (undoIncrementsLocked). Found by the review of the undo
// (it wrote these tests).

type undoCrashPoint struct {
	op  int
	dev *memdev.Dev
}

func undoCrashQemuMsgs(t *testing.T, dir string, b []byte) (map[string]bool, int) {
	p := filepath.Join(dir, "clone.qcow2")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, e, code := testkit.Run(t, "qemu-img", "check", p)
	m := map[string]bool{}
	for _, l := range strings.Split(e, "\n") {
		if strings.HasPrefix(l, "ERROR") || strings.HasPrefix(l, "Leaked") {
			m[l] = true
		}
	}
	return m, code
}

func undoCrashMsgs(r *CheckResult) map[string]bool {
	m := map[string]bool{}
	for _, l := range r.Messages {
		m[l] = true
	}
	return m
}

// undoCrashNew: the ERROR lines in got not in base, other than OFLAG_COPIED ones.
func undoCrashNew(base, got map[string]bool) (bad, copied []string) {
	for l := range got {
		if base[l] || !strings.HasPrefix(l, "ERROR") || strings.Contains(l, "reserved bits set") {
			continue
		}
		if strings.HasPrefix(l, "ERROR OFLAG_COPIED") {
			copied = append(copied, l)
		} else {
			bad = append(bad, l)
		}
	}
	sort.Strings(bad)
	return
}

// undoCrashRun runs work on a hookDev over image bytes img, cloning at every op
// (several clones per op), and verifies each clone.
func undoCrashRun(t *testing.T, img []byte, o Options, work func(im *Image), skip map[int64]bool) {
	dir := t.TempDir()
	cs := int64(1) << binary.BigEndian.Uint32(img[20:])
	size := int64(binary.BigEndian.Uint64(img[24:]))
	// baseline
	readGuest := func(im *Image) map[int64][]byte {
		out := map[int64][]byte{}
		for off := int64(0); off < size; off += cs {
			if skip[off] {
				continue
			}
			b := make([]byte, cs)
			if _, err := im.ReadAt(b, off); err != nil {
				t.Fatalf("read %d: %v", off, err)
			}
			out[off] = b
		}
		return out
	}
	bim, err := OpenDevice(memdev.FromBytes(img, memdev.Options{}), Options{Repair: true, ReadOnly: true, NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	br, err := bim.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	baseE := undoCrashMsgs(br)
	want := readGuest(bim)
	bim.Close()
	baseQ, bcode := undoCrashQemuMsgs(t, dir, img)
	t.Logf("baseline: engine %d corruptions %v; qemu exit %d %v", br.Corruptions, head(br.Messages, 4), bcode, baseQ)

	mem := memdev.FromBytes(img, memdev.Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	var pts []undoCrashPoint
	ops := 0
	dev := &hookDev{Dev: mem}
	dev.before = func() {
		k := ops
		ops++
		for _, keep := range []float64{0, 1, 0.5, 0.5, 0.3, 0.8} {
			pts = append(pts, undoCrashPoint{k, mem.CrashClone(rng, keep)})
		}
	}
	o.NoBacking = true
	im, err := OpenDevice(dev, o)
	if err != nil {
		t.Fatal(err)
	}
	work(im)
	im.Close()
	pts = append(pts, undoCrashPoint{ops, memdev.FromBytes(mem.Bytes(), memdev.Options{})})
	t.Logf("%d ops, %d clones", ops, len(pts))
	ncopied := 0
	for i, p := range pts {
		b := p.dev.Bytes()
		cim, err := OpenDevice(p.dev, Options{Repair: true, NoBacking: true})
		if err != nil {
			t.Errorf("op %d: reopen: %v", p.op, err)
			continue
		}
		r, err := cim.Check(CheckOptions{})
		if err != nil {
			t.Errorf("op %d: check: %v", p.op, err)
			cim.Close()
			continue
		}
		bad, cp := undoCrashNew(baseE, undoCrashMsgs(r))
		if len(bad) > 0 {
			t.Errorf("op %d clone %d: engine check new errors: %v", p.op, i, bad)
		}
		if len(cp) > 0 {
			ncopied++
			t.Logf("COPIEDOP %d", p.op)
			if ncopied < 3 {
				t.Logf("op %d: COPIED errors (engine) %v", p.op, cp)
			}
		}
		got := readGuest(cim)
		for off, w := range want {
			if !bytes.Equal(got[off], w) {
				t.Errorf("op %d: guest data at %d differs", p.op, off)
				break
			}
		}
		cim.Close()
		if i%2 == 0 || i == len(pts)-1 {
			q, _ := undoCrashQemuMsgs(t, dir, b)
			qb, qc := undoCrashNew(baseQ, q)
			if len(qb) > 0 {
				t.Errorf("op %d clone %d: qemu-img check new errors: %v", p.op, i, qb)
			}
			if len(qc) > 0 && ncopied < 3 {
				t.Logf("op %d: qemu COPIED %v", p.op, qc)
			}
		}
	}
	if ncopied > 0 {
		t.Errorf("%d clones with new OFLAG_COPIED errors", ncopied)
	}
}

func undoCrashFile(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// undoCrashPoke ORs bits into the L2 entry of guest offset g (L1 index g>>l1shift).
func undoCrashPoke(t *testing.T, b []byte, g uint64, bits uint64) {
	cb := binary.BigEndian.Uint32(b[20:])
	cs := uint64(1) << cb
	l2n := cs / 8
	l1off := binary.BigEndian.Uint64(b[40:])
	l1i := g / (cs * l2n)
	l2 := binary.BigEndian.Uint64(b[l1off+8*l1i:]) & 0x00fffffffffffe00
	idx := (g / cs) % l2n
	e := binary.BigEndian.Uint64(b[l2+8*idx:])
	binary.BigEndian.PutUint64(b[l2+8*idx:], e|bits)
}

func TestCrash_SnapshotUndoUncountable(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", p, "8M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 8k", "-c", "write -c -P 2 64k 4k", "-c", "write -P 3 2M 8k",
		"-c", "write -P 4 4M 4k", "-c", "write -P 5 4100k 4k", "-c", "write -P 6 6M 4k", p)
	b := undoCrashFile(t, p)
	undoCrashPoke(t, b, 64<<10, 1<<63)     // compressed + COPIED
	undoCrashPoke(t, b, 2<<20, 1<<57|1<<1) // reserved bits
	undoCrashPoke(t, b, 4100<<10, 0x200)   // unaligned: uncountable
	skip := map[int64]bool{4100 << 10: true}
	for _, l2c := range []int64{0, 4096} {
		undoCrashRun(t, b, Options{Repair: true, L2CacheSize: l2c}, func(im *Image) {
			if _, err := im.CreateSnapshot("s"); err == nil {
				t.Fatal("snapshot succeeded")
			} else {
				t.Logf("CreateSnapshot: %v", err)
			}
			if _, err := im.CreateSnapshot("s2"); err == nil {
				t.Fatal("snapshot 2 succeeded")
			}
		}, skip)
	}
}

func TestCrash_SnapshotUndoOverflow(t *testing.T) {
	testkit.NeedQemu(t)
	for _, rb := range []string{"1", "2"} {
		t.Run("rb"+rb, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,refcount_bits="+rb, p, "4M")
			if rb == "1" {
				testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s0", p)
				testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 8k", "-c", "write -c -P 2 64k 4k", p)
			} else {
				testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 8k", p)
				testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s0", p)
				testkit.MustRun(t, "qemu-io", "-c", "write -P 5 1M 4k", "-c", "write -c -P 2 2112k 4k", "-c", "write -c -P 3 2116k 4k", "-c", "write -c -P 4 2120k 4k", p)
			}
			b := undoCrashFile(t, p)
			undoCrashRun(t, b, Options{}, func(im *Image) {
				_, err := im.CreateSnapshot("s")
				t.Logf("CreateSnapshot: %v", err)
				if err == nil {
					t.Fatal("no overflow")
				}
				if _, err := im.WriteAt(bytes.Repeat([]byte{9}, 4096), 0); err != nil {
					t.Fatal(err)
				}
			}, map[int64]bool{0: true})
		})
	}
}

func TestCrash_StaleBitmapsDrop(t *testing.T) {
	testkit.NeedQemu(t)
	for _, v := range []string{"v3", "v3back"} {
		t.Run(v, func(t *testing.T) {
			d := t.TempDir()
			p := filepath.Join(d, "img.qcow2")
			opts := "cluster_size=4096"
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, "4M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", p)
			testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
			testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b1")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 2 1M 64k", p)
			if v == "v3back" { // a long backing name after the extensions
				testkit.MustRun(t, "qemu-img", "rebase", "-u", "-b", strings.Repeat("x", 900)+".raw", "-F", "raw", p)
			}
			b := undoCrashFile(t, p)
			ac := binary.BigEndian.Uint64(b[88:])
			binary.BigEndian.PutUint64(b[88:], ac&^1)
			undoCrashRun(t, b, Options{}, func(im *Image) {
				if _, err := im.WriteAt(bytes.Repeat([]byte{7}, 4096), 8192); err != nil {
					t.Fatal(err)
				}
			}, map[int64]bool{8192: true})
		})
	}
}
