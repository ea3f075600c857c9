package qcow2

import (
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// DirtyRun against a naive walk over the granules, on random marks and
// random ranges (its whole-word skip included).
func TestBitmaps_DirtyRunMatchesNaive(t *testing.T) {
	const size = 64 << 20
	d := memdev.New(memdev.Options{})
	if err := CreateDevice(d, CreateOptions{Size: size}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(d, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	const gran = 4096
	if err := im.AddBitmap("b", gran, true); err != nil {
		t.Fatal(err)
	}
	rng := testkit.Rand(t)
	for range 200 {
		off := rng.Int64N(size)
		n := min(rng.Int64N(1<<20)+1, size-off)
		if rng.IntN(4) == 0 {
			n = min(rng.Int64N(64*64*gran)+1, size-off) // runs over whole words
		}
		im.markDirty(off, n)
	}
	b, err := im.bitmapForRead("b")
	if err != nil {
		t.Fatal(err)
	}
	naive := func(off, n int64) (bool, int64) {
		bit := func(p int64) bool { g := uint64(p / gran); return b.bits.Load().bit(g) }
		d := bit(off)
		end := (off/gran + 1) * gran
		for end < off+n && bit(end) == d {
			end += gran
		}
		return d, min(end, off+n) - off
	}
	for range 2000 {
		off := rng.Int64N(size)
		n := min(rng.Int64N(8<<20)+1, size-off)
		gd, gl, err := im.DirtyRun("b", off, n)
		if err != nil {
			t.Fatal(err)
		}
		if wd, wl := naive(off, n); gd != wd || gl != wl {
			t.Fatalf("DirtyRun(%d, %d) = %v, %d; want %v, %d", off, n, gd, gl, wd, wl)
		}
	}
}
