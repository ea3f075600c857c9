//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
)

// TestReview46_SequentialModel (U1-U4, B2-B4): one goroutine runs random
// writes, zeroings (with and without Allocate, MayUnmap), ZeroThenWritev,
// Truncate and reads at aligned, misaligned and unaligned-EOF places on
// every backend, against a byte model of the file: after each request
// the size and every byte must match, reads past the end read zeros.
func TestReview46_SequentialModel(t *testing.T) {
	ops := 250
	if testing.Short() {
		ops = 80
	}
	fss := []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"tempdir", func(t *testing.T) string { return t.TempDir() }},
		{"tmpfs", func(t *testing.T) string { return smallTmpfs(t, 64<<20) }}, // no ZERO_RANGE
		{"xfs", func(t *testing.T) string { return xfsLargeSector(t, 300<<20, 4096) }},
		{"xfs-8k", func(t *testing.T) string { return xfsLargeSector(t, 300<<20, 8192) }}, // Align 8 KiB // reflink, unwritten extents
	}
	for _, fs := range fss {
		for _, c := range configs() {
			t.Run(fs.name+"/"+c.name, func(t *testing.T) {
				o := c.opt
				o.Create = true
				f, err := Open(filepath.Join(fs.dir(t), "img"), o)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				testModel(t, f, ops)
			})
		}
	}
}

func testModel(t *testing.T, f *File, ops int) {
	t.Helper()
	{
		{
			r := rand.New(rand.NewPCG(46, uint64(len(t.Name()))))
			var model []byte
			grow := func(end int64) {
				if end > int64(len(model)) {
					model = append(model, make([]byte, end-int64(len(model)))...)
				}
			}
			const span = 96 << 10
			za := f.Caps().ZeroAlign
			for i := range ops {
				off := r.Int64N(span)
				n := 1 + r.Int64N(24<<10)
				if r.IntN(3) == 0 {
					off, n = alignDown(off, 4096), alignUp(n, 4096)
				}
				var what string
				var err error
				switch k := r.IntN(10); {
				case k < 4:
					what = "write"
					b := randBytes(r, n, r.IntN(3) == 0)
					err = block.WriteAt(f, b, off)
					grow(off + n)
					copy(model[off:], b)
				case k < 6:
					flags := []block.Flags{0, block.MayUnmap}[r.IntN(2)]
					what = fmt.Sprintf("zeroes(%v)", flags)
					err = f.WriteZeroes(off, n, flags)
					grow(off + n)
					clear(model[off : off+n])
				case k < 7:
					what = "zeroes(Allocate)"
					off, n = alignDown(off, za), alignUp(n, za)
					err = f.WriteZeroes(off, n, block.Allocate)
					if errors.Is(err, block.ErrNotSupported) {
						err = nil // nothing written (B3)
						break
					}
					grow(off + n)
					clear(model[off : off+n])
				case k < 8:
					what = "zero-then-write"
					off, n = alignDown(off, za), alignUp(n, za)
					woff := off + r.Int64N(n)
					b := randBytes(r, 1+r.Int64N(off+n-woff), r.IntN(3) == 0)
					err = f.ZeroThenWritev(off, n, block.Allocate, woff, [][]byte{b})
					if errors.Is(err, block.ErrNotSupported) {
						err = nil // nothing written (B3)
						break
					}
					grow(max(off+n, woff+int64(len(b))))
					clear(model[off : off+n])
					copy(model[woff:], b)
				case k < 9:
					sz := r.Int64N(span + 8192)
					what = fmt.Sprintf("truncate(%d)", sz)
					err = f.Truncate(sz)
					if sz < int64(len(model)) {
						model = model[:sz]
					} else {
						grow(sz)
					}
				default:
					what = "read"
					got := make([]byte, n+1)[1:] // unaligned memory
					if err = block.ReadAt(f, got, off); err == nil {
						want := make([]byte, n)
						if off < int64(len(model)) {
							copy(want, model[off:])
						}
						if !bytes.Equal(got, want) {
							t.Fatalf("op %d: read [%d,+%d) wrong", i, off, n)
						}
					}
				}
				if err != nil {
					t.Fatalf("op %d: %s [%d,+%d): %v", i, what, off, n, err)
				}
				if sz, err := f.Size(); err != nil || sz != int64(len(model)) {
					t.Fatalf("op %d: after %s [%d,+%d): Size %d, %v; want %d", i, what, off, n, sz, err, len(model))
				}
				if i%10 == 9 {
					expectFile(t, f, model, fmt.Sprintf("op %d (%s)", i, what))
				}
			}
			expectFile(t, f, model, "end")
			t.Logf("align %d, zero align %d, allocate %v: %v", f.Caps().Align, f.Caps().ZeroAlign,
				f.Caps().ZeroFlags&block.Allocate != 0, f.Metrics())
		}
	}
}
