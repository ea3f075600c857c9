//go:build linux

package uring

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/qring/qring/block"
)

// TestReview46_MergeFixedZeroBuf (R8, R9): writes from the registered
// zero buffer become WRITE_FIXED when filled alone; a merge rewrites the
// staged SQE as a writev of real iovecs, whichever request is the head.
// Staged batches mixing zero-buffer writes and data writes, in both
// orders, must land every byte, and a merged SQE is not counted fixed.
func TestReview46_MergeFixedZeroBuf(t *testing.T) {
	const bs = 4096
	for _, direct := range []bool{false, true} {
		f := openTemp(t, Options{Backend: Ring, Direct: direct})
		if f.RingFeatures() == "" || !bytes.Contains([]byte(f.RingFeatures()), []byte("fixed-zeros")) {
			t.Skipf("no fixed zero buffer: %s", f.RingFeatures())
		}
		z := block.ZeroBuf()[:bs]
		for _, zeroFirst := range []bool{true, false} {
			t.Run(fmt.Sprintf("direct=%v/zeroFirst=%v", direct, zeroFirst), func(t *testing.T) {
				const n = 8
				// Fill with a pattern first, so the zeros must land.
				fill := pattern(5, n*bs)
				if err := block.WriteAt(f, fill, 0); err != nil {
					t.Fatal(err)
				}
				data := pattern(6, n*bs)
				want := append([]byte(nil), data...)
				isZero := func(i int) bool { return (i%2 == 0) == zeroFirst }
				for i := range n {
					if isZero(i) {
						clear(want[i*bs : (i+1)*bs])
					}
				}
				before := f.Metrics()
				errs := batch(t, f, n, func(i int) error {
					b := data[i*bs : (i+1)*bs]
					if isZero(i) {
						b = z
					}
					return block.WriteAt(f, b, int64(i*bs))
				})
				for i, err := range errs {
					if err != nil {
						t.Fatalf("request %d: %v", i, err)
					}
				}
				m := f.Metrics().Sub(before)
				if m.Merged < n-1 {
					t.Fatalf("the batch did not merge into one SQE: %v", m)
				}
				if m.Fixed != 0 {
					t.Fatalf("a merged writev counted as fixed: %v", m)
				}
				if !bytes.Equal(readAll(t, f, 0, n*bs), want) {
					t.Fatal("data mismatch")
				}
				for _, b := range z {
					if b != 0 {
						t.Fatal("the shared zero buffer was written to")
					}
				}
			})
		}
	}
}

// TestReview46_QueueMergeFixed (U12, U13): on a vector queue with
// registered buffers, a request inside one (READ/WRITE_FIXED alone) and
// adjacent requests outside any ride on one SQE, which must become a
// readv/writev of the right iovecs in both orders.
func TestReview46_QueueMergeFixed(t *testing.T) {
	const bs, n = 4096, 6
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("direct=%v", direct), func(t *testing.T) {
			f := openTemp(t, Options{Backend: Ring, Direct: direct})
			qq, err := f.NewVecQueue(n)
			if err != nil {
				t.Fatal(err)
			}
			q := qq.(*Queue)
			defer q.Close()
			reg := pattern(8, n*bs) // registered
			other := pattern(9, n*bs)
			if err := q.RegisterBuffers(reg); err != nil {
				t.Skipf("RegisterBuffers: %v", err)
			}
			run := func(reqs []*block.Req) {
				t.Helper()
				if err := q.Submit(reqs...); err != nil {
					t.Fatal(err)
				}
				out := make([]*block.Req, n)
				for got := 0; got < len(reqs); {
					k, err := q.Wait(out, len(reqs)-got)
					if err != nil {
						t.Fatal(err)
					}
					for _, r := range out[:k] {
						if r.Err != nil {
							t.Fatalf("%v at %d: %v", r.Op, r.Off, r.Err)
						}
					}
					got += k
				}
			}
			for _, regFirst := range []bool{true, false} {
				want := make([]byte, n*bs)
				reqs := make([]*block.Req, n)
				for i := range reqs {
					src := other
					if (i%2 == 0) == regFirst {
						src = reg
					}
					b := src[i*bs : (i+1)*bs]
					copy(want[i*bs:], b)
					reqs[i] = &block.Req{Op: block.OpWrite, Off: int64(i * bs), Buf: b}
				}
				before := f.Metrics()
				run(reqs)
				if m := f.Metrics().Sub(before); m.Merged < n-1 {
					t.Fatalf("regFirst=%v: the writes did not merge: %v", regFirst, m)
				}
				if !bytes.Equal(readAll(t, f, 0, n*bs), want) {
					t.Fatalf("regFirst=%v: written data mismatch", regFirst)
				}
				// Read it back the same way: into the registered buffer
				// and the other, alternating.
				regBack := block.AlignedBuf(n*bs, block.DefaultMemAlign)
				copy(regBack, reg)
				clear(reg)
				clear(other)
				for i := range reqs {
					src := other
					if (i%2 == 0) == regFirst {
						src = reg
					}
					reqs[i] = &block.Req{Op: block.OpRead, Off: int64(i * bs), Buf: src[i*bs : (i+1)*bs]}
				}
				before = f.Metrics()
				run(reqs)
				if m := f.Metrics().Sub(before); m.Merged < n-1 {
					t.Fatalf("regFirst=%v: the reads did not merge: %v", regFirst, m)
				}
				for i, r := range reqs {
					if !bytes.Equal(r.Buf, want[i*bs:(i+1)*bs]) {
						t.Fatalf("regFirst=%v: read %d mismatch", regFirst, i)
					}
				}
				copy(reg, regBack)
				copy(other, pattern(9, n*bs))
			}
		})
	}
}
