package qcow2

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// A zeroing with Allocate whose edges lie in clusters that read as
// zeros, racing a write into the last edge's cluster beside the range:
// WriteZeroes checks both edges first (zeroEdgesIfZero), then zeroes
// cluster by cluster (zeroRange), which decides again at each edge. The
// write may come before the check (refused, nothing changed), after
// the zeroing (done), or in between: then zeroRange refuses at the last
// edge, the clusters before it already zeroed, as QEMU's block layer
// zeroes the head and the aligned middle before the driver refuses the
// tail with BDRV_REQ_NO_FALLBACK (block B3: the outcome depends on the
// requests beside). Whatever the order: a success zeroed the whole
// range, a refusal left each byte as it was or zero, and the write
// beside is never lost. The torture's batches race Allocate zeroings
// the same way (torture_zeroalloc_test.go), but reach the in-between
// order rarely (never in 15 cases of a mutation that loses the write
// beside there; this test fails it within a few thousand rounds). The
// write beside starts later round by round, across the zeroing's steps:
// about 20 part-way refusals in 20000 rounds here, 80 in the 2000 the
// race detector runs (make test's race pass, a second).
func TestZeroAllocate_RacesWriteBeside(t *testing.T) {
	const cs = 4096
	rounds := 20000
	if raceEnabled || testing.Short() {
		rounds = 2000
	}
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: cs, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	// Edges in clusters 0 and 3 (zero clusters), clusters 1-2 data.
	off, n := int64(cs/2), int64(3*cs)
	middle := bytes.Repeat([]byte{0xa5}, 2*cs)
	before := make([]byte, n)
	copy(before[cs/2:], middle)
	beside := bytes.Repeat([]byte{0x5a}, cs/2)
	var done, refused, partway int
	for it := 0; it < rounds; it++ {
		if err := im.WriteZeroes(0, 8*cs, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteAt(middle, cs); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		var zerr error
		wg.Go(func() { zerr = im.WriteZeroes(off, n, block.Allocate) })
		wg.Go(func() {
			// Later and later, round by round, across the
			// zeroing's steps.
			spin(it % 1024 * 64)
			if _, err := im.WriteAt(beside, off+n); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		got := make([]byte, 4*cs)
		if _, err := im.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[off+n:], beside) {
			t.Fatalf("round %d: the write beside the zeroing was lost (zeroing: %v)", it, zerr)
		}
		if k := bytes.IndexFunc(got[:off], func(r rune) bool { return r != 0 }); k >= 0 {
			t.Fatalf("round %d: guest offset %#x before the range reads non-zero", it, k)
		}
		r := got[off : off+n]
		switch {
		case zerr == nil:
			done++
			if k := bytes.IndexFunc(r, func(r rune) bool { return r != 0 }); k >= 0 {
				t.Fatalf("round %d: WriteZeroes with Allocate succeeded, yet guest offset %#x reads %#x", it, off+int64(k), r[k])
			}
		case errors.Is(zerr, block.ErrNotSupported):
			refused++
			changed := false
			for k := range r {
				if r[k] != before[k] {
					if r[k] != 0 {
						t.Fatalf("round %d: refused, guest offset %#x reads %#x: neither %#x nor zero", it, off+int64(k), r[k], before[k])
					}
					changed = true
				}
			}
			if changed {
				partway++
			}
		default:
			t.Fatalf("round %d: %v", it, zerr)
		}
	}
	t.Logf("%d rounds: %d zeroed, %d refused (%d part-way)", rounds, done, refused, partway)
	if res, err := im.Check(CheckOptions{}); err != nil || !res.Clean() {
		t.Fatalf("check: %v %+v", err, res)
	}
}

var spinSink int

// spin busy-waits for about k small steps.
func spin(k int) {
	x := 0
	for i := range k {
		x += i ^ x>>3
	}
	spinSink = x
}
