package qcow2

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// mark sets exactly the granules a range touches, whatever its
// alignment to the granules and to the 64-bit words of the bitset, and
// nothing past the disk's last granule.
func TestBitmapsReview_MarkMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, gb := range []uint8{9, 12, 16, 31} {
		for _, nbits := range []uint64{1, 63, 64, 65, 127, 128, 129, 1000} {
			b := &liveBitmap{e: format.BitmapEntry{GranularityBits: gb}}
			v := newBitWords(nbits)
			b.bits.Store(v)
			want := make([]bool, nbits)
			gran := uint64(1) << gb
			for range 40 {
				off := rng.Uint64N(nbits*gran + gran)
				n := 1 + rng.Uint64N(min(200*gran, nbits*gran))
				if rng.IntN(3) == 0 {
					n = 1 + rng.Uint64N(3)
				}
				b.mark(off, n)
				for i := off / gran; i <= (off+n-1)/gran && i < nbits; i++ {
					want[i] = true
				}
				for i := range nbits {
					got := v.bit(i)
					if got != want[i] {
						t.Fatalf("gran 2^%d nbits %d: after mark(%d, %d) bit %d = %v, want %v", gb, nbits, off, n, i, got, want[i])
					}
				}
				for w := range uint64(len(v.chunks)) * bitChunkWords {
					if x := v.word(w).Load(); w*64+64 > nbits && (nbits <= w*64 || x>>(nbits-w*64) != 0) && x != 0 {
						t.Fatalf("gran 2^%d nbits %d: bits past the end set: word %d = %#x", gb, nbits, w, x)
					}
				}
			}
		}
	}
}

// A writable open that cannot maintain the bitmaps marks them stale
// (autoclear bit) durably before the first guest write: otherwise a
// crash can keep the write and lose the header, and a bitmap that
// claims to be valid misses it. QEMU flushes its IN_USE update before
// it lets a write in (update_header_sync).
func TestBitmapsReview_StaleDurableBeforeFirstWrite(t *testing.T) {
	t.Parallel()
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	for _, tc := range []struct {
		name string
		opts Options
		// patch makes the image one the engine does not maintain.
		patch bool
	}{
		// A table of another size (QEMU refuses to open it): refused
		// without NoBitmaps.
		{"damaged table, NoBitmaps", Options{NoBitmaps: true}, true},
		{"NoBitmaps", Options{NoBitmaps: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := bitmapImage(t, t.TempDir())
			raw, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if tc.patch {
				patchBitmapEntry(t, raw, "boff", func(e *format.BitmapEntry) { e.TableSize++ })
			}
			mem := memdev.FromBytes(raw, memdev.Options{})
			im, err := OpenDevice(mem, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			// In place: the cluster at 8M is allocated, and b4k's granule
			// at 8M+32k is clean.
			const at = 8<<20 + 32<<10
			if _, err := im.WriteAt(bytes.Repeat([]byte{9}, 4096), at); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(5, 5))
			bad := 0
			for range 64 {
				c := mem.CrashClone(rng, 0.5)
				craw := c.Bytes()
				cim, err := OpenDevice(memdev.FromBytes(craw, memdev.Options{}), Options{ReadOnly: true})
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, 1)
				if _, err := cim.ReadAt(got, at); err != nil {
					t.Fatal(err)
				}
				cim.Close()
				if got[0] != 9 {
					continue
				}
				for _, b := range rawBitmaps(t, craw) {
					if b.name == "b4k" && b.valid() && !b.dirty(at) {
						if bad++; bad == 1 {
							// QEMU's view of the clone, for the report.
							cp := filepath.Join(t.TempDir(), "clone.qcow2")
							if err := os.WriteFile(cp, craw, 0o644); err != nil {
								t.Fatal(err)
							}
							t.Logf("qemu-img info: %s\nqemu-nbd's b4k:\n%s", qemuBitmaps(t, cp), dirtyMap(t, cp, "b4k"))
						}
					}
				}
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			if bad > 0 {
				t.Fatalf("%d of 64 crash clones hold the write and a valid bitmap b4k without it", bad)
			}
		})
	}
}

// patchBitmapEntry changes the directory entry of the bitmap name in the
// image raw (its table offset, size and flags).
func patchBitmapEntry(t *testing.T, raw []byte, name string, fn func(*format.BitmapEntry)) {
	t.Helper()
	_, ext := bitmapsExtOf(t, raw)
	dirb := raw[ext.DirOffset : uint64(ext.DirOffset)+ext.DirSize]
	es, err := format.ParseBitmapDirectory(dirb, ext.N)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Name == name {
			fn(&e)
			format.PutBitmapEntry(dirb, e)
			return
		}
	}
	t.Fatalf("no bitmap %s", name)
}

// bitmapsExtOf is the header of the image raw and its bitmaps
// extension.
func bitmapsExtOf(t *testing.T, raw []byte) (*format.Header, format.BitmapsExt) {
	t.Helper()
	h, err := format.ParseHeader(raw)
	if err != nil {
		t.Fatal(err)
	}
	var ext format.BitmapsExt
	for _, e := range h.Extensions {
		if e.Type == format.ExtBitmaps {
			if ext, err = format.ParseBitmapsExt(e.Data); err != nil {
				t.Fatal(err)
			}
		}
	}
	return h, ext
}
