package qcow2

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestModel_Concurrent runs random concurrent reads, writes, zero writes
// and discards against an Image and a flat in-memory model and compares
// everything. Goroutines own interleaved 4 KiB blocks, so their writes
// share clusters (the allocation races are the point); cluster-wide ops
// (zeroes, discards) take the model lock exclusively.
func TestModel_Concurrent(t *testing.T) {
	t.Parallel()
	cases := []imageCase{
		{"default", CreateOptions{}, Options{}, false},
		{"prealloc-off", CreateOptions{}, Options{Prealloc: "off"}, false},
		{"c4k-tiny-cache", CreateOptions{ClusterSize: 4096}, Options{L2CacheSize: 8192, RefcountCacheSize: 8192}, false},
		{"c512-rb1", CreateOptions{ClusterSize: 512, RefcountBits: 1}, Options{}, false},
		{"v2", CreateOptions{Compat: "0.10"}, Options{}, false},
		{"backing", CreateOptions{}, Options{}, true},
		{"lazy-backing", CreateOptions{LazyRefcounts: true, ClusterSize: 16384}, Options{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runModel(t, tc.co, tc.o, tc.backing)
		})
	}
}

// imageCase is one image configuration of a workload test (runModel,
// runCrash): its create options, its options, and whether it has a
// backing device.
type imageCase struct {
	name    string
	co      CreateOptions
	o       Options
	backing bool
}

func runModel(t *testing.T, co CreateOptions, o Options, withBacking bool) {
	rng := testkit.Rand(t)
	const size = 8 << 20
	co.Size = size
	model := make([]byte, size)
	if withBacking {
		bdata := make([]byte, size/2+12345) // shorter than the image
		for i := range bdata {
			bdata[i] = byte(i/4096) ^ 0xa5
		}
		copy(model, bdata)
		o.Backing = memdev.FromBytes(bdata, memdev.Options{})
	}
	im, p := testImage(t, co, o)
	cs := int64(im.Geometry().ClusterSize)
	const G = 8
	const blk = 4096
	var mu sync.RWMutex
	seeds := make([]uint64, G)
	for g := range seeds {
		seeds[g] = rng.Uint64()
	}
	err := testkit.Parallel(G, func(g int) error {
		r := rand.New(rand.NewPCG(seeds[g], uint64(g)))
		for i := 0; i < 300; i++ {
			op := r.IntN(100)
			switch {
			case op < 50: // write inside one of our blocks
				b := int64(r.IntN(size/blk/G))*G + int64(g)
				off := b*blk + int64(r.IntN(blk))
				n := int64(1 + r.IntN(int(b*blk+blk-off)))
				data := pattern(int(n), byte(r.Uint32()))
				mu.RLock()
				_, err := im.WriteAt(data, off)
				if err == nil {
					copy(model[off:], data)
				}
				mu.RUnlock()
				if err != nil {
					return err
				}
			case op < 85: // read one of our blocks
				b := int64(r.IntN(size/blk/G))*G + int64(g)
				got := make([]byte, blk)
				mu.RLock()
				err := block.ReadAt(im, got, b*blk)
				want := append([]byte(nil), model[b*blk:b*blk+blk]...)
				mu.RUnlock()
				if err != nil {
					return err
				}
				if !bytes.Equal(got, want) {
					t.Errorf("goroutine %d: block %d mismatch at %d", g, b, testkit.FirstDiff(got, want))
					return nil
				}
			case op < 93: // zero a range (whole clusters and partial edges)
				zoff := r.Int64N(size - 1)
				zn := min(int64(1+r.IntN(int(3*cs))), size-zoff)
				flags := block.Flags(0)
				if r.IntN(2) == 0 {
					flags = block.MayUnmap
				}
				mu.Lock()
				err := im.WriteZeroes(zoff, zn, flags)
				if err == nil {
					clear(model[zoff : zoff+zn])
				}
				mu.Unlock()
				if err != nil {
					return err
				}
			default: // discard whole clusters
				c := r.Int64N(size / cs)
				n := min(cs*int64(1+r.IntN(4)), size-c*cs)
				mu.Lock()
				err := im.Discard(c*cs, n)
				if err == nil {
					discardModel(im, model, c*cs, n, cs, o.Backing)
				}
				mu.Unlock()
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "image vs model")
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, testkit.ReadAll(t, im), model, "image vs model after flush")
	if o.Backing == nil {
		// Reopen from the file and compare again.
		im2 := reopenReadOnly(t, im, p)
		testkit.MustEqual(t, testkit.ReadAll(t, im2), model, "reopened image vs model")
	}
}

// discardModel applies Discard's documented semantics to the model.
func discardModel(im *Image, model []byte, off, n, cs int64, backing block.Device) {
	first := (off + cs - 1) / cs
	end := (off + n) / cs
	for c := first; c < end; c++ {
		lo, hi := c*cs, min(c*cs+cs, int64(len(model)))
		if backing == nil || im.Header().Version >= 3 {
			clear(model[lo:hi])
			continue
		}
		bs, _ := backing.Size()
		buf := make([]byte, hi-lo)
		if lo < bs {
			block.ReadAt(backing, buf[:min(hi, bs)-lo], lo)
		}
		copy(model[lo:hi], buf)
	}
}
