package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestFaultSweep_BitmapAdminSeqs: admin sequences with a device error once at each op (and for good from
// each op), then a write and a Close in peace: QEMU opens the result,
// qemu-img check finds no corruption, every valid enabled bitmap holds
// the last write, and a reopen-and-close cycle keeps it so.
func TestFaultSweep_BitmapAdminSeqs(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	base, err := os.ReadFile(bitmapImage(t, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	w := func(im *Image, off int64) error {
		_, err := im.WriteAt(bytes.Repeat([]byte{7}, 4096), off)
		return err
	}
	seqs := map[string]func(im *Image) []error{
		"add-remove-clear": func(im *Image) []error {
			return []error{w(im, 1<<20), im.AddBitmap("n", 65536, true), w(im, 2<<20), im.RemoveBitmap("b0"),
				w(im, 3<<20), im.ClearBitmap("b4k"), im.EnableBitmap("boff", true), im.MergeBitmap("n", im, "b4k")}
		},
		"shrink-add-remove-grow": func(im *Image) []error {
			return []error{w(im, 1<<20), im.Shrink(8 << 20), im.AddBitmap("n", 512, true), im.RemoveBitmap("b4k"),
				w(im, 2<<20), im.Truncate(24 << 20), w(im, 20<<20)}
		},
		"remove-all-add": func(im *Image) []error {
			return []error{im.RemoveBitmap("b0"), im.RemoveBitmap("b4k"), im.RemoveBitmap("boff"), w(im, 1<<20),
				im.AddBitmap("x", 4096, true)}
		},
		"snapshots": func(im *Image) []error {
			_, e1 := im.CreateSnapshot("s1")
			return []error{e1, w(im, 1<<20), im.Truncate(32 << 20), im.AddBitmap("n", 65536, true),
				im.ApplySnapshot("s1"), im.DeleteSnapshotNamed("s1")}
		},
		"refcount-bits": func(im *Image) []error {
			return []error{w(im, 1<<20), im.AddBitmap("n", 65536, true), im.SetRefcountBits(64), w(im, 2<<20), im.RemoveBitmap("b0")}
		},
		"check-repair": func(im *Image) []error {
			_, e := im.Check(CheckOptions{Repair: RepairAll})
			return []error{w(im, 1<<20), im.AddBitmap("n", 65536, true), im.Truncate(20 << 20), e, w(im, 2<<20)}
		},
	}
	const last = 5 << 20
	for name, seq := range seqs {
		t.Run(name, func(t *testing.T) {
			for _, sticky := range []bool{false, true} {
				for i := int64(0); ; i++ {
					mem := memdev.FromBytes(base, memdev.Options{})
					dev := errordev.New(mem, nil, errordev.Options{})
					im, err := OpenDevice(dev, Options{})
					if err != nil {
						t.Fatal(err)
					}
					if sticky {
						dev.SetInjector(errordev.OnIndexSticky(i, errordev.ErrInjectedEIO))
					} else {
						dev.SetInjector(errordev.OnIndex(i, errordev.ErrInjectedEIO))
					}
					errs := seq(im)
					dev.SetInjector(nil)
					injected := dev.Injected()
					lerr := w(im, last)
					cerr := im.Close()
					what := fmt.Sprintf("%s op %d sticky %v (errs %v, last write %v, close %v)", name, i, sticky, errs, lerr, cerr)
					q := filepath.Join(t.TempDir(), "r.qcow2")
					if err := os.WriteFile(q, mem.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
					if err := testkit.QemuCheckReport(q, testkit.QemuCheckResult.NoCorruption); err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					if _, _, code := testkit.Run(t, "qemu-img", "info", "--output=json", q); code != 0 {
						t.Fatalf("%s: qemu-img info fails", what)
					}
					landed := landedAt(t, mem.Bytes(), last)
					hold := func(stage string, raw []byte) {
						for _, b := range rawBitmaps(t, raw) {
							if b.valid() && b.flags&format.BitmapAuto != 0 && landed && !b.dirty(last) {
								t.Fatalf("%s %s: valid enabled bitmap %s misses the last write", what, stage, b.name)
							}
						}
					}
					hold("after close", mem.Bytes())
					// Reopen and close in peace.
					m2 := memdev.FromBytes(mem.Bytes(), memdev.Options{})
					im2, err := OpenDevice(m2, Options{})
					if err != nil {
						t.Logf("%s: reopen: %v", what, err)
					} else {
						if err := im2.Close(); err != nil {
							t.Fatalf("%s: reclose: %v", what, err)
						}
						if err := os.WriteFile(q, m2.Bytes(), 0o644); err != nil {
							t.Fatal(err)
						}
						if err := testkit.QemuCheckReport(q, testkit.QemuCheckResult.NoCorruption); err != nil {
							t.Fatalf("%s reopened: %v", what, err)
						}
						hold("reopened", m2.Bytes())
					}
					if injected == 0 {
						break
					}
				}
			}
		})
	}
}

// TestFaultSweep_BitmapResizedStore: a device error once, or for good, at every op of a Close that stores
// resized bitmaps (a new directory, then the header): no corruption,
// QEMU opens the image, a valid enabled bitmap holds the writes, and a
// reopen-and-close cycle keeps it so.
func TestFaultSweep_BitmapResizedStore(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	base, err := os.ReadFile(bitmapImageOf(t, t.TempDir(), "-o", "cluster_size=512"))
	if err != nil {
		t.Fatal(err)
	}
	offs := []int64{1 << 20, 7 << 20}
	for _, sticky := range []bool{false, true} {
		for i := int64(0); ; i++ {
			mem := memdev.FromBytes(base, memdev.Options{})
			dev := errordev.New(mem, nil, errordev.Options{})
			im, err := OpenDevice(dev, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range offs {
				if _, err := im.WriteAt(bytes.Repeat([]byte{7}, 4096), o); err != nil {
					t.Fatal(err)
				}
			}
			if err := im.Shrink(8 << 20); err != nil {
				t.Fatal(err)
			}
			if err := im.Flush(); err != nil {
				t.Fatal(err)
			}
			if sticky {
				dev.SetInjector(errordev.OnIndexSticky(i, errordev.ErrInjectedEIO))
			} else {
				dev.SetInjector(errordev.OnIndex(i, errordev.ErrInjectedEIO))
			}
			cerr := im.Close()
			injected := dev.Injected()
			what := fmt.Sprintf("op %d sticky %v (close %v)", i, sticky, cerr)
			for stage, raw := range map[string][]byte{"as left": mem.Bytes()} {
				q := filepath.Join(t.TempDir(), "r.qcow2")
				if err := os.WriteFile(q, raw, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := testkit.QemuCheckReport(q, testkit.QemuCheckResult.NoCorruption); err != nil {
					t.Fatalf("%s %s: %v", what, stage, err)
				}
				if _, _, code := testkit.Run(t, "qemu-img", "info", "--output=json", q); code != 0 {
					t.Fatalf("%s %s: qemu-img info fails", what, stage)
				}
				for _, b := range rawBitmaps(t, raw) {
					if b.valid() && b.flags&format.BitmapAuto != 0 && !b.dirty(uint64(offs[0])) {
						t.Fatalf("%s %s: valid bitmap %s misses the write", what, stage, b.name)
					}
				}
				m2 := memdev.FromBytes(raw, memdev.Options{})
				im2, err := OpenDevice(m2, Options{})
				if err != nil {
					t.Fatalf("%s: reopen: %v", what, err)
				}
				if err := im2.Close(); err != nil {
					t.Fatalf("%s: reclose: %v", what, err)
				}
				if err := os.WriteFile(q, m2.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := testkit.QemuCheckReport(q, testkit.QemuCheckResult.NoCorruption); err != nil {
					t.Fatalf("%s reopened: %v", what, err)
				}
			}
			if injected == 0 {
				if i < 4 {
					t.Fatalf("only %d ops in Close", i)
				}
				break
			}
		}
	}
}
