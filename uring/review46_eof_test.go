//go:build linux

package uring

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
)

// TestReview46_DirectUnalignedEOF (U1, R6, block B2): an O_DIRECT File
// over a file whose size is no multiple of the alignment (written
// buffered by another program). Reads across the end, aligned or not,
// through the File (merged when adjacent) and a queue, get the bytes
// before it and zeros after; writes at and across the unaligned end, by
// the File and by a queue, leave the size and bytes a buffered file
// would have.
func TestReview46_DirectUnalignedEOF(t *testing.T) {
	for _, viaQueue := range []bool{false, true} {
		t.Run(fmt.Sprintf("queue=%v", viaQueue), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "img")
			model := pattern(60, 5000)
			if err := os.WriteFile(path, model, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path, Options{Backend: Ring, Direct: true})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			a := f.Caps().Align
			if a > 4096 {
				t.Skipf("align %d", a)
			}
			var q block.Queue
			if viaQueue {
				if q, err = f.NewVecQueue(8); err != nil {
					t.Fatal(err)
				}
				defer q.Close()
			}
			do := func(reqs ...*block.Req) {
				t.Helper()
				if q == nil {
					errs := batch(t, f, len(reqs), func(i int) error {
						r := reqs[i]
						if r.Op == block.OpWrite {
							return block.WriteAt(f, r.Buf, r.Off)
						}
						return block.ReadAt(f, r.Buf, r.Off)
					})
					for i, err := range errs {
						if err != nil {
							t.Fatalf("%v at %d: %v", reqs[i].Op, reqs[i].Off, err)
						}
					}
					return
				}
				if err := q.Submit(reqs...); err != nil {
					t.Fatal(err)
				}
				out := make([]*block.Req, len(reqs))
				for got := 0; got < len(reqs); {
					n, err := q.Wait(out, len(reqs)-got)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range out[:n] {
						if r.Err != nil {
							t.Fatalf("%v at %d: %v", r.Op, r.Off, r.Err)
						}
					}
					got += n
				}
			}
			expect := func(what string) {
				t.Helper()
				if sz, err := f.Size(); err != nil || sz != int64(len(model)) {
					t.Fatalf("%s: Size %d, %v; want %d", what, sz, err, len(model))
				}
				// Adjacent aligned reads (merged) running past the end,
				// and a misaligned one across it.
				bufs := make([][]byte, 4)
				reqs := make([]*block.Req, 0, 5)
				for i := range bufs {
					bufs[i] = block.AlignedBuf(4096, block.DefaultMemAlign)
					for k := range bufs[i] {
						bufs[i][k] = 0xee
					}
					reqs = append(reqs, &block.Req{Op: block.OpRead, Off: int64(i) * 4096, Buf: bufs[i]})
				}
				odd := make([]byte, 3000)
				reqs = append(reqs, &block.Req{Op: block.OpRead, Off: int64(len(model)) - 1500, Buf: odd})
				do(reqs...)
				want := make([]byte, 16384)
				copy(want, model)
				if got := bytes.Join(bufs, nil); !bytes.Equal(got, want) {
					t.Fatalf("%s: aligned reads across the end wrong", what)
				}
				if !bytes.Equal(odd, want[len(model)-1500:len(model)+1500]) {
					t.Fatalf("%s: misaligned read across the end wrong", what)
				}
			}
			expect("start")
			// A misaligned write across the unaligned end: grows it.
			b := pattern(61, 300)
			do(&block.Req{Op: block.OpWrite, Off: 4900, Buf: b})
			model = append(model[:4900], b...)
			expect("misaligned across the end")
			// An aligned write of the block holding the end, and the
			// next: the end becomes aligned.
			b = pattern(62, 8192)
			do(&block.Req{Op: block.OpWrite, Off: 4096, Buf: b[:4096]}, &block.Req{Op: block.OpWrite, Off: 8192, Buf: b[4096:]})
			model = append(model[:4096], b...)
			expect("aligned over the end")
			// Back to an unaligned end, then a misaligned write that
			// ends inside the last block, past the end.
			if err := f.Truncate(9000); err != nil {
				t.Fatal(err)
			}
			model = model[:9000]
			b = pattern(63, 100)
			do(&block.Req{Op: block.OpWrite, Off: 9050, Buf: b})
			model = append(model, make([]byte, 50)...)
			model = append(model, b...)
			expect("misaligned past the end")
		})
	}
}
