package qcow2

import (
	"bytes"
	"encoding/json"
	"errors"
	"iter"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Persistent dirty bitmaps are maintained (Q22): the same writes, zero
// writes and discards through qemu-io and through the engine leave the
// same dirty bitmaps, as qemu-nbd exports them, the same flags in
// qemu-img info, the same data, and an image qemu-img check passes
// without a leak. Before, a writable open cleared the bitmaps' autoclear
// bit: every bitmap was lost, and its clusters leaked.

// bitmapImage is a 16 MiB qcow2 image made by qemu-img with three
// bitmaps (b0: enabled, 64 KiB granules; b4k: enabled, 4 KiB; boff:
// disabled) and two writes through qemu-io that dirtied the enabled
// ones.
func bitmapImage(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "bm.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4096", p, "b4k")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "--disable", p, "boff")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 8M 4k", "-f", "qcow2", p)
	return p
}

var bitmapNames = []string{"b0", "b4k", "boff"}

// bitmapOps are the guest operations, as qemu-io commands and as engine
// calls.
var bitmapOps = []struct {
	qemu string
	do   func(im *Image) error
}{
	{"write -P 3 1049088 4096", func(im *Image) error { _, err := im.WriteAt(bytes.Repeat([]byte{3}, 4096), 1049088); return err }},
	{"write -z 3M 128k", func(im *Image) error { return im.WriteZeroes(3<<20, 128<<10, 0) }},
	{"discard 5M 64k", func(im *Image) error { return im.Discard(5<<20, 64<<10) }},
	{"write -P 4 15790080 8192", func(im *Image) error { _, err := im.WriteAt(bytes.Repeat([]byte{4}, 8192), 15790080); return err }},
	{"write -z 8196096 4096", func(im *Image) error { return im.WriteZeroes(8196096, 4096, 0) }},
	{"write -c -P 5 12M 64k", func(im *Image) error { return im.WriteCompressed(12<<20, bytes.Repeat([]byte{5}, 64<<10)) }},
}

// dirtyMap is testkit.DirtyMap.
func dirtyMap(t *testing.T, path, name string) string { return testkit.DirtyMap(t, path, name) }

// qemuBitmaps is qemu-img info's bitmaps list of path (name, flags,
// granularity), as JSON.
func qemuBitmaps(t *testing.T, path string) string {
	t.Helper()
	var info struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps json.RawMessage `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "info", "--output=json", path)), &info); err != nil {
		t.Fatal(err)
	}
	return string(info.FormatSpecific.Data.Bitmaps)
}

func TestBitmaps_MaintainedLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	for _, queue := range []bool{false, true} {
		name := "sync"
		if queue {
			name = "queue"
		}
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			base := bitmapImage(t, dir)
			theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
			for _, p := range []string{theirs, ours} {
				testkit.MustRun(t, "cp", base, p)
			}
			args := []string{"-d", "unmap"}
			for _, op := range bitmapOps {
				args = append(args, "-c", op.qemu)
			}
			testkit.MustRun(t, "qemu-io", append(args, "-f", "qcow2", theirs)...)
			im, err := Open(ours, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if got := qemuBitmapsOpen(t, ours); !strings.Contains(got, "in-use") {
				t.Errorf("bitmaps of the open image are not in use: %s", got)
			}
			for _, op := range bitmapOps {
				if queue && strings.HasPrefix(op.qemu, "write -P") {
					continue // below, through a queue
				}
				if err := op.do(im); err != nil {
					t.Fatalf("%s: %v", op.qemu, err)
				}
			}
			if queue {
				q, err := im.NewQueue(4)
				if err != nil {
					t.Fatal(err)
				}
				reqs := []*block.Req{
					{Op: block.OpWrite, Off: 1049088, Buf: bytes.Repeat([]byte{3}, 4096)},
					{Op: block.OpWrite, Off: 15790080, Buf: bytes.Repeat([]byte{4}, 8192)},
				}
				if err := q.Submit(reqs...); err != nil {
					t.Fatal(err)
				}
				out := make([]*block.Req, 2)
				for n := 0; n < 2; {
					k, err := q.Wait(out, 1)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range out[:k] {
						if r.Err != nil {
							t.Fatal(r.Err)
						}
					}
					n += k
				}
				if err := q.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			sameBitmapsAsQemu(t, theirs, ours, bitmapNames...)
		})
	}
}

// sameBitmapsAsQemu checks that ours passes qemu-img check and holds
// theirs's data, bitmaps (qemu-img info) and, for each name, dirty map
// (qemu-nbd -B).
func sameBitmapsAsQemu(t *testing.T, theirs, ours string, names ...string) {
	t.Helper()
	testkit.QemuCheck(t, ours)
	testkit.MustRun(t, "qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", theirs, ours)
	if a, b := qemuBitmaps(t, theirs), qemuBitmaps(t, ours); a != b {
		t.Errorf("qemu-img info bitmaps:\nQEMU's: %s\nours:   %s", a, b)
	}
	for _, n := range names {
		if a, b := dirtyMap(t, theirs, n), dirtyMap(t, ours, n); a != b {
			t.Errorf("bitmap %s:\nQEMU's:\n%s\nours:\n%s", n, a, b)
		}
	}
}

// qemuBitmapsOpen is qemuBitmaps of an image another process holds open
// (-U).
func qemuBitmapsOpen(t *testing.T, path string) string {
	t.Helper()
	return testkit.MustRun(t, "qemu-img", "info", "-U", "--output=json", path)
}

// A crash at any device op of the Close that stores the bitmaps, or
// before it, leaves each bitmap either IN_USE (stale for QEMU) or with
// every write it must hold; qemu-img check finds no corruption.
func TestBitmaps_CrashWhileStoring(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := t.TempDir()
	mem, clones := bitmapCrashClones(t, dir, 3,
		func(im *Image) error {
			for _, op := range bitmapOps {
				if err := op.do(im); err != nil {
					return err
				}
			}
			return nil
		},
		func(im *Image) error { return nil })
	// What every bitmap that claims to be valid must show: the image
	// closed cleanly.
	final := filepath.Join(dir, "final.qcow2")
	if err := mem.WriteFile(final); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, n := range bitmapNames {
		want[n] = dirtyMap(t, final, n)
	}
	if strings.Contains(qemuBitmaps(t, final), "in-use") {
		t.Fatalf("bitmaps in use after Close: %s", qemuBitmaps(t, final))
	}
	valid := 0
	for i, p := range distinctClones(t, dir, clones) {
		testkit.QemuCheckNoCorruption(t, p)
		var info []struct {
			Name  string   `json:"name"`
			Flags []string `json:"flags"`
		}
		if err := json.Unmarshal([]byte(qemuBitmaps(t, p)), &info); err != nil {
			t.Fatal(err)
		}
		for _, bm := range info {
			if strings.Contains(strings.Join(bm.Flags, ","), "in-use") {
				continue
			}
			valid++
			if got := dirtyMap(t, p, bm.Name); got != want[bm.Name] {
				t.Errorf("clone %d: bitmap %s claims to be valid:\n%s\nwant\n%s", i, bm.Name, got, want[bm.Name])
			}
		}
	}
	t.Logf("%d clones, %d valid bitmaps checked", len(clones), valid)
	if valid == 0 {
		t.Fatal("no clone had a valid bitmap: the test proves nothing")
	}
}

// Options.NoBitmaps: the bitmaps are marked stale (autoclear bit) as
// before Q22, and qemu-img no longer shows them.
func TestBitmaps_NoBitmapsOption(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	p := bitmapImage(t, t.TempDir())
	im, err := Open(p, Options{NoBitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if got := qemuBitmaps(t, p); got != "" && got != "null" {
		t.Fatalf("bitmaps after NoBitmaps: %s", got)
	}
}

// A bitmap already IN_USE at open (a crash left it) is kept as it is,
// stale; the others are maintained.
func TestBitmaps_InUseAtOpenKept(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	p := bitmapImage(t, dir)
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// The file as a crash now would leave it: every bitmap IN_USE.
	crashed := filepath.Join(dir, "crashed.qcow2")
	testkit.MustRun(t, "cp", p, crashed)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if got := qemuBitmaps(t, crashed); strings.Count(got, "in-use") != 3 {
		t.Fatalf("bitmaps of the open image: %s", got)
	}
	im, err = Open(crashed, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt([]byte{1}, 0); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if got := qemuBitmaps(t, crashed); strings.Count(got, "in-use") != 3 {
		t.Fatalf("stale bitmaps after a reopen: %s", got)
	}
	testkit.QemuCheck(t, crashed)
}

// A bitmap table that names the L1 table, or another bitmap's table, is
// not maintained (nor freed at Close, which would free that cluster, or
// free one twice): a writable open is refused, and one with NoBitmaps
// marks the bitmaps stale through their autoclear bit.
func TestBitmaps_HostileTableNotMaintained(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	for _, target := range []string{"L1 table", "another bitmap's table"} {
		t.Run(target, func(t *testing.T) {
			p := bitmapImage(t, t.TempDir())
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			h, _ := bitmapsExtOf(t, raw)
			off := h.L1TableOffset
			if target != "L1 table" {
				patchBitmapEntry(t, raw, "b4k", func(e *format.BitmapEntry) { off = e.TableOffset })
			}
			patchBitmapEntry(t, raw, "b0", func(e *format.BitmapEntry) { e.TableOffset = off })
			writeByteThroughEngine(t, p, raw)
			if got := qemuBitmaps(t, p); got != "" && got != "null" {
				t.Fatalf("bitmaps still valid: %s", got)
			}
			testkit.QemuCheckNoCorruption(t, p)
			testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 64k", "-c", "read -P 2 8M 4k", "-c", "read -P 7 4M 1", "-f", "qcow2", p)
		})
	}
}

// AddBitmap and RemoveBitmap write a new directory: a crash at any of
// their device ops leaves the old bitmaps or the new ones, never
// corruption.
func TestBitmaps_CrashWhileEditing(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	mem, clones := bitmapCrashClones(t, dir, 5,
		func(im *Image) error { _, err := im.WriteAt([]byte{9}, 2<<20); return err },
		func(im *Image) error {
			if err := im.AddBitmap("new", 4096, true); err != nil {
				return err
			}
			return im.RemoveBitmap("b4k")
		})
	for _, p := range distinctClones(t, dir, clones) {
		testkit.QemuCheckNoCorruption(t, p)
	}
	final := filepath.Join(dir, "final.qcow2")
	if err := mem.WriteFile(final); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, final)
	got := qemuBitmaps(t, final)
	if !strings.Contains(got, `"new"`) || strings.Contains(got, `"b4k"`) || strings.Contains(got, "in-use") {
		t.Fatalf("bitmaps after add and remove: %s", got)
	}
}

// bitmapCrashClones opens bitmapImage's image in memory, runs setup and
// a Flush, then op and Close with crash clones (none, all and some of
// the unflushed writes kept) before each device op of those two, and
// one after; it returns the device and the clones.
func bitmapCrashClones(t *testing.T, dir string, seed uint64, setup, op func(*Image) error) (*memdev.Dev, []*memdev.Dev) {
	t.Helper()
	raw, err := os.ReadFile(bitmapImage(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	mem := memdev.FromBytes(raw, memdev.Options{})
	dev := &hookDev{Dev: mem, before: func() {}}
	im, err := OpenDevice(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := setup(im); err != nil {
		t.Fatal(err)
	}
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	var clones []*memdev.Dev
	dev.before = func() {
		for _, keep := range []float64{0, 1, rng.Float64()} {
			clones = append(clones, mem.CrashClone(rng, keep))
		}
	}
	if err := op(im); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	dev.before = func() {}
	return mem, append(clones, mem.CrashClone(rng, 1))
}

// distinctClones writes each clone with bytes no earlier one had to a
// file in dir (one name, rewritten: use it before the next) and yields
// its index and path.
func distinctClones(t *testing.T, dir string, clones []*memdev.Dev) iter.Seq2[int, string] {
	return func(yield func(int, string) bool) {
		seen := map[string]bool{}
		p := filepath.Join(dir, "clone.qcow2")
		for i, c := range clones {
			b := c.Bytes()
			if seen[string(b)] {
				continue
			}
			seen[string(b)] = true
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if !yield(i, p) {
				return
			}
		}
	}
}

// writeByteThroughEngine writes raw to p, checks that a writable open
// refuses it and changes nothing (its bitmaps cannot be maintained;
// QEMU refuses it too), then opens it with Options.NoBitmaps, writes
// the byte 7 at 4 MiB (a change the enabled bitmaps must show) and
// closes it: the bitmaps are stale now.
func writeByteThroughEngine(t *testing.T, p string, raw []byte) {
	t.Helper()
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if im, err := Open(p, Options{}); err == nil {
		im.Close()
		t.Fatal("a writable open maintains bitmaps it cannot maintain")
	} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
		t.Fatalf("open: %v, want ErrCorrupt or ErrUnsupported", err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("the refused open changed the image (%v)", err)
	}
	im, err := Open(p, Options{NoBitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt([]byte{7}, 4<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
}
