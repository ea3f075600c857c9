package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// A bitmap past QEMU's bounds (here 514 MiB of bitmap: a 2 TiB + 8 GiB
// disk in 512-byte granules), which QEMU refuses to open, is not
// maintained: the engine allocated it whole (twice) and stored it back,
// and qemu-img still could not open the image. Now a writable open is
// refused, as QEMU's, and one with NoBitmaps marks it stale.
func TestBitmapsReview_BitmapPastQemuBounds(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	p := filepath.Join(t.TempDir(), "big.qcow2")
	const size = 2<<40 + 8<<30
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M", p, fmt.Sprint(size))
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "65536", p, "b")
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	patchBitmapEntry(t, raw, "b", func(e *format.BitmapEntry) {
		e.TableSize = uint32(format.BitmapTableSize(size, 9, 2<<20))
		e.GranularityBits = 9
	})
	// PutBitmapEntry writes the table and flags only: the granularity
	// byte by hand.
	h, err := format.ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range h.Extensions {
		if x.Type == format.ExtBitmaps {
			ext, err := format.ParseBitmapsExt(x.Data)
			if err != nil {
				t.Fatal(err)
			}
			raw[uint64(ext.DirOffset)+17] = 9
		}
	}
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, code := testkit.Run(t, "qemu-img", "info", p); code == 0 {
		t.Fatal("qemu-img opens the image: the test proves nothing")
	}
	writeByteThroughEngine(t, p, raw)
	// Stale bitmaps' clusters leak, as before Q22.
	testkit.QemuCheckNoCorruption(t, p)
	if got := qemuBitmaps(t, p); got != "" && got != "null" {
		t.Fatalf("bitmaps still valid: %s", got)
	}
}

// An IN_USE bitmap whose table is a valid bitmap's (a foreign or
// damaged image: qemu-img check counts that cluster twice) makes a
// writable open fail (with NoBitmaps, mark the bitmaps stale): the Close that moved the valid bitmap
// freed the cluster the IN_USE one still names, which the next
// allocation hands to guest data, and a later qemu-img bitmap --remove
// of the IN_USE bitmap frees the guest's cluster.
func TestBitmapsReview_InUseSharesValidTable(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	p := bitmapImage(t, t.TempDir())
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var b0 format.BitmapEntry
	patchBitmapEntry(t, raw, "b0", func(e *format.BitmapEntry) { b0 = *e })
	patchBitmapEntry(t, raw, "boff", func(e *format.BitmapEntry) {
		e.TableOffset, e.TableSize = b0.TableOffset, b0.TableSize
		e.Flags |= format.BitmapInUse
	})
	writeByteThroughEngine(t, p, raw)
	testkit.QemuCheckNoCorruption(t, p)
	if got := qemuBitmaps(t, p); got != "" && got != "null" {
		t.Fatalf("bitmaps still valid: %s", got)
	}
}

// A writable open of an image whose bitmaps cannot be maintained fails
// and writes nothing, as QEMU's; with Options.NoBitmaps the open marks
// them stale (the header changes) and succeeds.
func TestBitmaps_DamagedRefusedUnlessNoBitmaps(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	p := bitmapImage(t, t.TempDir())
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	patchBitmapEntry(t, raw, "b4k", func(e *format.BitmapEntry) { e.TableOffset += 512 })
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open: %v, want ErrCorrupt", err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("the refused open changed the image (%v)", err)
	}
	im, err := Open(p, Options{NoBitmaps: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || bytes.Equal(got, raw) {
		t.Fatalf("the open with NoBitmaps left the bitmaps valid (%v)", err)
	}
}
