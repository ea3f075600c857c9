package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// A resize resizes the maintained bitmaps as QEMU does (Q22): a growth
// shows its new range clean and keeps marking there, a shrink drops the
// bits past its end, and the tables are stored at the new size. Before,
// a resize left every bitmap IN_USE, lost for a backup tool.

// bitmapImageOf is bitmapImage with qemu-img create options (a cluster
// size: 512-byte clusters make the bitmap tables span several entries,
// so their size changes with the disk's).
func bitmapImageOf(t *testing.T, dir string, opts ...string) string {
	t.Helper()
	p := filepath.Join(dir, "bm.qcow2")
	testkit.MustRun(t, "qemu-img", append(append([]string{"create", "-q", "-f", "qcow2"}, opts...), p, "16M")...)
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4096", p, "b4k")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "--disable", p, "boff")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 8M 4k", "-f", "qcow2", p)
	return p
}

var bitmapNamesOf = []string{"b0", "b4k", "boff"}

func TestBitmaps_ResizeLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	const mib = 1 << 20
	for _, tc := range []struct {
		name  string
		opts  []string
		sizes []int64 // resized to each in turn, writes after each
	}{
		{"grow", nil, []int64{40 * mib}},
		{"grow-512", []string{"-o", "cluster_size=512"}, []int64{40 * mib}},
		{"shrink-off-granule", nil, []int64{6*mib + 512}},
		{"shrink-512", []string{"-o", "cluster_size=512"}, []int64{6*mib + 3*512}},
		{"shrink-then-grow", []string{"-o", "cluster_size=512"}, []int64{6 * mib, 24 * mib}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // independent, mostly waiting for QEMU's tools
			dir := t.TempDir()
			base := bitmapImageOf(t, dir, tc.opts...)
			theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
			for _, p := range []string{theirs, ours} {
				testkit.MustRun(t, "cp", base, p)
			}
			// Before the resize: what bitmapOps do but the compressed
			// write (one cluster only, and 512-byte clusters here).
			before := bitmapOps[:5]
			args := []string{"-d", "unmap"}
			for _, op := range before {
				args = append(args, "-c", op.qemu)
			}
			testkit.MustRun(t, "qemu-io", append(args, "-f", "qcow2", theirs)...)
			im, err := Open(ours, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range before {
				if err := op.do(im); err != nil {
					t.Fatalf("%s: %v", op.qemu, err)
				}
			}
			cur := int64(16 * mib)
			for _, size := range tc.sizes {
				resize := []string{"resize", "-q", "-f", "qcow2"}
				if size < cur {
					resize = append(resize, "--shrink")
					err = im.Shrink(size)
				} else {
					err = im.Truncate(size)
				}
				if err != nil {
					t.Fatalf("resize to %d: %v", size, err)
				}
				testkit.MustRun(t, "qemu-img", append(resize, theirs, strconv.FormatInt(size, 10))...)
				// Near the new end (not in its last granules, which a
				// shrink must not mark), and at the old end of a growth.
				offs := []int64{size - 16384, size/2 + 4096}
				if size > cur {
					offs = append(offs, cur-512)
				}
				var io []string
				for _, off := range offs {
					io = append(io, "-c", fmt.Sprintf("write -P 6 %d 512", off))
					if _, err := im.WriteAt(bytes.Repeat([]byte{6}, 512), off); err != nil {
						t.Fatal(err)
					}
				}
				testkit.MustRun(t, "qemu-io", append(io, "-f", "qcow2", theirs)...)
				cur = size
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			sameBitmapsAsQemu(t, theirs, ours, bitmapNamesOf...)
		})
	}
}

// inUseCopy is a copy of bitmapImage's image whose bitmaps are all
// IN_USE: taken while the engine has it open.
func inUseCopy(t *testing.T, dir string) string {
	t.Helper()
	p := bitmapImage(t, dir)
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "inuse.qcow2")
	if err := os.WriteFile(q, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := qemuBitmaps(t, q); strings.Count(got, "in-use") != 3 {
		t.Fatalf("copy's bitmaps are not all in use: %s", got)
	}
	return q
}

// QEMU refuses to resize an image whose bitmap is inconsistent, and so
// does the engine, changing nothing.
func TestBitmaps_ResizeRefusedWhileInconsistent(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	p := inUseCopy(t, dir)
	for _, size := range []string{"32M", "8M"} {
		args := []string{"resize", "-f", "qcow2", p, size}
		if size == "8M" {
			args = []string{"resize", "--shrink", "-f", "qcow2", p, size}
		}
		_, stderr, code := testkit.Run(t, "qemu-img", args...)
		if code != 1 || !strings.Contains(stderr, "Bitmap 'b0' is inconsistent and cannot be used") {
			t.Fatalf("qemu-img resize %s: exit %d, %s", size, code, stderr)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var bi *BitmapInconsistentError
	if err := im.Truncate(32 << 20); !errors.As(err, &bi) || bi.Name != "b0" || !errors.Is(err, ErrUnsupported) {
		t.Errorf("Truncate: %v, want the inconsistent bitmap b0", err)
	}
	if err := im.Shrink(8 << 20); !errors.As(err, &bi) {
		t.Errorf("Shrink: %v, want the inconsistent bitmap b0", err)
	}
	if sz, _ := im.Size(); sz != 16<<20 {
		t.Errorf("size %d after refused resizes", sz)
	}
	if err := im.Truncate(16 << 20); err != nil {
		t.Errorf("Truncate to the same size: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("refused resizes changed the image")
	}
	testkit.QemuCheck(t, p)
}

// With every bitmap inconsistent, RemoveBitmap and AddBitmap work as
// qemu-img bitmap's --remove and --add do (before, the engine refused
// both: it kept no set to edit when none was maintained).
func TestBitmaps_EditWhenAllInconsistentLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := t.TempDir()
	base := inUseCopy(t, dir)
	theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
	for _, p := range []string{theirs, ours} {
		testkit.MustRun(t, "cp", base, p)
	}
	testkit.MustRun(t, "qemu-img", "bitmap", "--remove", theirs, "b4k")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "65536", theirs, "new")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 5 2M 4k", "-f", "qcow2", theirs)
	im, err := Open(ours, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.RemoveBitmap("b4k"); err != nil {
		t.Fatal(err)
	}
	if err := im.AddBitmap("new", 65536, true); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{5}, 4096), 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, theirs)
	sameBitmapsAsQemu(t, theirs, ours, "new")
}

// A crash at any device op of a growth and of the Close that follows
// leaves each bitmap IN_USE or holding every write, the ones past the
// old end too, and an image our open and qemu-img check take.
func TestBitmaps_CrashWhileResizing(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	dir := t.TempDir()
	mem, clones := bitmapCrashClones(t, dir, 7,
		func(im *Image) error { _, err := im.WriteAt([]byte{9}, 2<<20); return err },
		func(im *Image) error {
			if err := im.Truncate(40 << 20); err != nil {
				return err
			}
			_, err := im.WriteAt([]byte{8}, 30<<20)
			return err
		})
	final := filepath.Join(dir, "final.qcow2")
	if err := mem.WriteFile(final); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, n := range bitmapNames {
		want[n] = dirtyMap(t, final, n)
	}
	if !strings.Contains(want["b0"], "31457280") {
		t.Fatalf("b0 after Close does not show the write past the old end:\n%s", want["b0"])
	}
	valid, reopened := 0, 0
	for i, p := range distinctClones(t, dir, clones) {
		testkit.QemuCheckNoCorruption(t, p)
		info := qemuBitmaps(t, p)
		if strings.Count(info, `"name"`) != 3 {
			t.Fatalf("clone %d: bitmaps gone: %s", i, info)
		}
		if strings.Contains(info, "in-use") {
			// Our open keeps IN_USE bitmaps whose tables are of the
			// old size (a crash after the growth's header), as QEMU
			// does. On a sample: each reopen costs qemu-img runs.
			if reopened*4 > i {
				continue
			}
			reopened++
			im, err := Open(p, Options{})
			if err != nil {
				t.Fatalf("clone %d: %v", i, err)
			}
			if len(im.Bitmaps()) != 3 {
				t.Errorf("clone %d: our open lists %v", i, im.Bitmaps())
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			if got := qemuBitmaps(t, p); strings.Count(got, `"name"`) != 3 {
				t.Errorf("clone %d: after our open and close: %s", i, got)
			}
			continue
		}
		valid++
		for _, n := range bitmapNames {
			if got := dirtyMap(t, p, n); got != want[n] {
				t.Errorf("clone %d: bitmap %s claims to be valid:\n%s\nwant\n%s", i, n, got, want[n])
			}
		}
	}
	t.Logf("%d clones, %d with valid bitmaps, %d in use reopened", len(clones), valid, reopened)
	if valid == 0 {
		t.Fatal("no clone had valid bitmaps: the test proves nothing")
	}
}

// Writes racing a growth keep their bits: the grown bitmap shares the
// words of the one they marked (bitWords.resized). Run under the race
// detector too.
func TestBitmaps_WritesRacingResizeKeepBits(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	p := bitmapImage(t, t.TempDir())
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 4, 64
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := im.WriteAt([]byte{byte(w + 1)}, int64(w*each+i)*(16<<10)+4096*7); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for size := int64(17 << 20); size <= 24<<20; size += 1 << 20 {
		if err := im.Truncate(size); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	b, err := im.bitmapForRead("b4k")
	if err != nil {
		t.Fatal(err)
	}
	v := b.bits.Load()
	for w := range writers {
		for i := range each {
			off := uint64(w*each+i)*(16<<10) + 4096*7
			if !v.bit(off / 4096) {
				t.Fatalf("write at %d lost its bit across the growth", off)
			}
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)
}

// A crash after a growth's header and before Close leaves IN_USE
// bitmaps whose tables are of the old size. QEMU opens that image and
// keeps them (it checks a table's size only for the bitmaps it loads);
// so does the engine: before, its open found "a table of the wrong
// size" and marked every bitmap stale.
func TestBitmaps_InUseOfOldSizeKept(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	p := bitmapImageOf(t, dir, "-o", "cluster_size=512")
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Truncate(40 << 20); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p) // as a crash would leave it
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	q := filepath.Join(dir, "crashed.qcow2")
	if err := os.WriteFile(q, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	want := qemuBitmaps(t, q)
	if strings.Count(want, "in-use") != 3 {
		t.Fatalf("crashed copy's bitmaps: %s", want)
	}
	testkit.QemuCheck(t, q)
	im, err = Open(q, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if bms := im.Bitmaps(); len(bms) != 3 || !bms[0].InUse {
		t.Errorf("our open lists %+v", bms)
	}
	if _, err := im.WriteAt([]byte{1}, 30<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if got := qemuBitmaps(t, q); got != want {
		t.Errorf("bitmaps after our open and close:\n%s\nwant\n%s", got, want)
	}
	testkit.QemuCheck(t, q)
	testkit.MustRun(t, "qemu-img", "bitmap", "--remove", q, "b0")
	testkit.QemuCheck(t, q)
}

// TestBitmaps_EmptyDiskRefused: a bitmap of an empty disk has a table of
// no entries, which QEMU refuses to open the image with ("doesn't
// satisfy the constraints"): a shrink to 0 of an image with bitmaps and
// an AddBitmap on an empty disk are refused, and the image stays one
// QEMU opens. Both went through before.
func TestBitmaps_EmptyDiskRefused(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Shrink(0); !errors.Is(err, ErrUnsupported) {
		t.Errorf("shrink to 0 with a bitmap: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)
	q := filepath.Join(t.TempDir(), "z.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", q, "0")
	im, err = Open(q, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.AddBitmap("b0", 65536, true); !errors.Is(err, ErrUnsupported) {
		t.Errorf("AddBitmap on an empty disk: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, q)
	testkit.MustRun(t, "qemu-img", "info", q)
}
