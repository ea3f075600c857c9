package qcow2

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestSetRefcountBits: every width to every other, on an image with a
// snapshot (refcounts of 2) and a compressed cluster: the data reads the
// same, Check and qemu-img check find it clean, and qemu-img sees the
// new width. Narrowing to 1 bit, where a refcount of 2 does not fit, is
// refused with nothing changed.
func TestSetRefcountBits(t *testing.T) {
	widths := []uint32{1, 2, 4, 8, 16, 32, 64}
	for _, from := range widths {
		for _, to := range widths {
			if to == from {
				continue
			}
			mem := memdev.New(memdev.Options{})
			if err := CreateDevice(mem, CreateOptions{Size: 4 << 20, ClusterSize: 4096, RefcountBits: int(from)}); err != nil {
				t.Fatal(err)
			}
			im, err := OpenDevice(mem, Options{})
			if err != nil {
				t.Fatal(err)
			}
			writeAt(t, im, 0, pattern(200<<10, 1))
			if err := im.WriteCompressed(1<<20, bytes.Repeat([]byte("z"), 4096)); err != nil {
				t.Fatal(err)
			}
			snap := from > 1 // a snapshot needs refcounts of 2
			if snap {
				if _, err := im.CreateSnapshot("s"); err != nil {
					t.Fatal(err)
				}
				writeAt(t, im, 64<<10, pattern(8192, 2))
			}
			before := testkit.ReadAll(t, im)
			err = im.SetRefcountBits(to)
			if snap && to == 1 {
				if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "has a refcount of 2") {
					t.Fatalf("%d to 1 bit with a snapshot: %v", from, err)
				}
				if im.Header().RefcountOrder != im.Geometry().RefcountOrder || im.Geometry().RefcountBits != from {
					t.Fatalf("refused change left width %d", im.Geometry().RefcountBits)
				}
			} else if err != nil {
				t.Fatalf("%d to %d bits: %v", from, to, err)
			} else if im.Geometry().RefcountBits != to {
				t.Fatalf("%d to %d bits: width %d after", from, to, im.Geometry().RefcountBits)
			}
			// The image goes on working with the new width.
			writeAt(t, im, 2<<20, pattern(64<<10, 3))
			copy(before[2<<20:], pattern(64<<10, 3))
			if got := testkit.ReadAll(t, im); !bytes.Equal(got, before) {
				t.Fatalf("%d to %d bits: data changed", from, to)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			im2, err := OpenDevice(mem, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			mustClean(t, im2)
			im2.Close()
			if testkit.HaveQemu() && (from == 16 || to == 16) {
				p := filepath.Join(t.TempDir(), "r.qcow2")
				if err := mem.WriteFile(p); err != nil {
					t.Fatal(err)
				}
				if err := testkit.QemuCheckReport(p, testkit.QemuCheckResult.Clean); err != nil {
					t.Errorf("%d to %d bits: qemu-img check: %v", from, to, err)
				}
			}
		}
	}
}
