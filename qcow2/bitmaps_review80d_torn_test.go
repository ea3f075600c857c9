package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// Crash at every write (and torn inside it, sector by sector) of admin
// sequences and their Close: no corruption, and a valid enabled bitmap
// that was never cleared holds every write whose data the crash kept.
func TestBitmapsReview80d_TornSeqs(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	base, err := os.ReadFile(bitmapImageOf(t, t.TempDir(), "-o", "cluster_size=512"))
	if err != nil {
		t.Fatal(err)
	}
	w := func(im *Image, off int64) error {
		_, err := im.WriteAt(bytes.Repeat([]byte{7}, 4096), off)
		return err
	}
	offs := []int64{1 << 20, 2 << 20, 3 << 20}
	seqs := map[string]func(im *Image) error{
		"shrink-add-remove-grow": func(im *Image) error {
			for _, e := range []error{w(im, offs[0]), im.Shrink(8 << 20), im.AddBitmap("n", 512, true), im.RemoveBitmap("b4k"),
				w(im, offs[1]), im.Truncate(24 << 20), w(im, offs[2])} {
				if e != nil {
					return e
				}
			}
			return nil
		},
		"snapshots-refcounts": func(im *Image) error {
			_, e1 := im.CreateSnapshot("s1")
			for _, e := range []error{e1, w(im, offs[0]), im.AddBitmap("n", 65536, true), im.SetRefcountBits(64), w(im, offs[1]),
				im.RemoveBitmap("boff"), im.DeleteSnapshotNamed("s1"), w(im, offs[2])} {
				if e != nil {
					return e
				}
			}
			return nil
		},
	}
	for name, seq := range seqs {
		t.Run(name, func(t *testing.T) {
			mem := memdev.FromBytes(base, memdev.Options{})
			rec := &tornRecorder{Device: mem, mem: mem, all: true}
			im, err := OpenDevice(rec, Options{})
			if err != nil {
				t.Fatal(err)
			}
			rec.armed = true
			if err := seq(im); err != nil {
				t.Fatal(err)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%d writes", len(rec.recs))
			dir := t.TempDir()
			n := 0
			for i, r := range rec.recs {
				for k := 0; k < len(r.data); k += memdev.SectorSize {
					if k == 0 && i%4 != 0 {
						continue // the state before a write is the one after the last: a sample
					}
					img := append([]byte(nil), r.before...)
					if end := int(r.off) + k; end > len(img) {
						img = append(img, make([]byte, end-len(img))...)
					}
					copy(img[r.off:], r.data[:k])
					what := fmt.Sprintf("write %d at %d (%d bytes) torn after %d", i, r.off, len(r.data), k)
					q := filepath.Join(dir, "c.qcow2")
					if err := os.WriteFile(q, img, 0o644); err != nil {
						t.Fatal(err)
					}
					n++
					if err := testkit.QemuCheckReport(q, noCorruptionButCopied); err != nil {
						t.Fatalf("%s: %v", what, err)
					}
					for _, b := range rawBitmaps(t, img) {
						if !b.valid() || b.flags&format.BitmapAuto == 0 {
							continue
						}
						for _, o := range offs {
							if landedAt(t, img, o) && !b.dirty(uint64(o)) {
								t.Fatalf("%s: valid bitmap %s misses the write at %d", what, b.name, o)
							}
						}
					}
				}
			}
			t.Logf("%d crash states", n)
		})
	}
}

// noCorruptionButCopied is NoCorruption, but for OFLAG_COPIED errors: a
// snapshot's crash may leave COPIED out of step (snapshot_crash_test).
func noCorruptionButCopied(r testkit.QemuCheckResult) bool {
	if r.CheckErrors != 0 || r.Exit == 1 {
		return false
	}
	for _, l := range strings.Split(r.Stderr, "\n") {
		if strings.HasPrefix(l, "ERROR") && !strings.HasPrefix(l, "ERROR OFLAG_COPIED") {
			return false
		}
	}
	return true
}
