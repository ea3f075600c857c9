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
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
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
		{"tmpfs", func(t *testing.T) string { return smallTmpfs(t, 64<<20) }},             // no ZERO_RANGE
		{"xfs", func(t *testing.T) string { return xfsLargeSector(t, 300<<20, 4096) }},    // unwritten extents
		{"xfs-8k", func(t *testing.T) string { return xfsLargeSector(t, 300<<20, 8192) }}, // Align 8 KiB
		{"blockdev", nil}, // 64 KiB: writes past its end fail (U15)
	}
	for _, fs := range fss {
		for _, c := range configs() {
			t.Run(fs.name+"/"+c.name, func(t *testing.T) {
				o := c.opt
				path := ""
				if fs.dir == nil {
					path = looptest.LoopDevice(t, 64<<10, 4<<20)
				} else {
					o.Create = true
					path = filepath.Join(fs.dir(t), "img")
				}
				f, err := Open(path, o)
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
			fixed := f.Caps().Fixed // a block device: its size (U15)
			if fixed {
				sz, err := f.Size()
				if err != nil {
					t.Fatal(err)
				}
				model = readAll(t, f, 0, int(sz))
			}
			// past: on a block device, a write or zeroing ending past
			// the end fails with ENOSPC having written nothing (U15).
			past := func(end int64) bool { return fixed && end > int64(len(model)) }
			var wantNoSpace bool
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
					if wantNoSpace = past(off + n); wantNoSpace {
						break
					}
					grow(off + n)
					copy(model[off:], b)
				case k < 6:
					flags := []block.Flags{0, block.MayUnmap}[r.IntN(2)]
					what = fmt.Sprintf("zeroes(%v)", flags)
					err = f.WriteZeroes(off, n, flags)
					if wantNoSpace = past(off + n); wantNoSpace {
						break
					}
					grow(off + n)
					clear(model[off : off+n])
				case k < 7:
					what = "zeroes(Allocate)"
					off, n = alignDown(off, za), alignUp(n, za)
					err = f.WriteZeroes(off, n, block.Allocate)
					if wantNoSpace = past(off + n); wantNoSpace {
						break
					}
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
					if wantNoSpace = past(max(off+n, woff+int64(len(b)))); wantNoSpace {
						break
					}
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
					if fixed {
						// Up to the device's size: nothing changes;
						// past it: refused (U15).
						if sz > int64(len(model)) {
							if err == nil {
								t.Fatalf("op %d: %s of a block device succeeded", i, what)
							}
							err = nil
						}
						break
					}
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
				if wantNoSpace {
					if !errors.Is(err, unix.ENOSPC) {
						t.Fatalf("op %d: %s [%d,+%d) past the device's end: %v, want ENOSPC", i, what, off, n, err)
					}
					err, wantNoSpace = nil, false
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
