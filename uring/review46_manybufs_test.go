//go:build linux

package uring

import (
	"bytes"
	"fmt"
	"testing"
)

// TestReview46_ManyBuffers (R6, U1): vectors of more than IOV_MAX
// buffers, aligned (chunked at IOV_MAX, merging beside them) and
// misaligned in every way (bounced, read-modify-written), written and
// read back in one call each, on every backend.
func TestReview46_ManyBuffers(t *testing.T) {
	const nb = maxIov + 77
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			for _, k := range []struct {
				name   string
				off    int64
				bufLen int
				odd    bool
			}{
				{"aligned", 4096, 4096, false},
				{"odd-memory", 8192, 4096, true},
				{"odd-lengths", 4096, 1000, false},
				{"odd-offset", 4097, 512, true},
			} {
				t.Run(k.name, func(t *testing.T) {
					src := pattern(uint64(len(k.name)), nb*k.bufLen+1)
					if k.odd {
						src = src[1:]
					} else {
						src = src[:nb*k.bufLen]
					}
					src = src[:nb*k.bufLen]
					before := f.Metrics()
					if err := f.Writev(k.off, vecOf(src, k.bufLen)); err != nil {
						t.Fatal(err)
					}
					dst := make([]byte, nb*k.bufLen+1)
					if k.odd {
						dst = dst[1:]
					}
					dst = dst[:nb*k.bufLen]
					if err := f.Readv(k.off, vecOf(dst, k.bufLen)); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(dst, src) {
						t.Fatal("vector read back wrong")
					}
					if got := readAll(t, f, k.off, len(src)); !bytes.Equal(got, src) {
						t.Fatal("file bytes wrong")
					}
					t.Log(fmt.Sprint(f.Metrics().Sub(before)))
				})
			}
		})
	}
}
