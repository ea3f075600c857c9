//go:build linux

package uring

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qring/qring/block"
)

// TestReview46_DirectRegionsWithTruncate (U1, U3, U10, B1): on an
// O_DIRECT file, goroutines own disjoint regions whose edges share
// aligned blocks: each writes (aligned, misaligned, unaligned buffers)
// and zeroes inside its own region and checks it after every request,
// a queue's owner writes aligned blocks of its own region, and another
// goroutine truncates the file to sizes past the regions while a fourth
// asks Size. A read-modify-write must never write a neighbour's bytes
// back stale (removing wmu's exclusive hold fails this test at once),
// nor must Size see the file padded past its end by one (padMu): every
// size seen is one a Truncate set (or the first). The Size check is only
// a sampler: the padded window is short, and dropping padMu from Size
// went unnoticed in three runs.
func TestReview46_DirectRegionsWithTruncate(t *testing.T) {
	rounds := 100
	if testing.Short() {
		rounds = 40
	}
	// Regions: [0,7000) and [7000,8192) share a block; [8192,24576) is the
	// queue's, whole blocks; [24576,end) spans whole blocks too and ends unaligned at the file's end.
	const end = 50001
	bounds := []int64{0, 7000, 8192, 24576, end}
	const qRegion = 2
	for _, c := range directConfigs()[:3] { // the ring modes: queues need one
		t.Run(c.name, func(t *testing.T) {
			f := openTemp(t, c.opt)
			if f.Caps().Align != 4096 && f.Caps().Align != 512 {
				t.Skipf("align %d", f.Caps().Align)
			}
			init := pattern(1, end)
			if err := block.WriteAt(f, init, 0); err != nil {
				t.Fatal(err)
			}
			var sizes sync.Map // every size a Truncate set
			sizes.Store(int64(end), true)
			var stop atomic.Bool
			var wg, side sync.WaitGroup
			errc := make(chan error, 16)
			fail := func(format string, a ...any) {
				select {
				case errc <- fmt.Errorf(format, a...):
				default:
				}
				stop.Store(true)
			}
			side.Go(func() { // truncater
				r := rand.New(rand.NewPCG(9, 9))
				for !stop.Load() {
					sz := end + r.Int64N(8192)
					sizes.Store(sz, true)
					if err := f.Truncate(sz); err != nil {
						fail("truncate %d: %v", sz, err)
					}
				}
			})
			side.Go(func() { // Size watcher
				for !stop.Load() {
					sz, err := f.Size()
					if err != nil {
						fail("size: %v", err)
						return
					}
					if _, ok := sizes.Load(sz); !ok {
						fail("Size %d: no Truncate set it (padded past the end?)", sz)
					}
				}
			})
			for g := range len(bounds) - 1 {
				lo, hi := bounds[g], bounds[g+1]
				model := append([]byte(nil), init[lo:hi]...)
				if g == qRegion {
					wg.Go(func() { queueRegion(f, lo, hi, model, rounds, fail, &stop) })
					continue
				}
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(g), 46))
					got := make([]byte, hi-lo)
					for round := 0; round < rounds && !stop.Load(); round++ {
						off := lo + r.Int64N(hi-lo)
						n := 1 + r.Int64N(hi-off)
						if r.IntN(3) == 0 { // aligned, if it fits
							a := int64(512)
							o, e := alignUp(off, a), alignDown(off+n, a)
							if o < e {
								off, n = o, e-o
							}
						}
						var err error
						switch r.IntN(6) {
						case 0:
							err = f.WriteZeroes(off, n, []block.Flags{0, block.MayUnmap}[r.IntN(2)])
							clear(model[off-lo : off-lo+n])
						default:
							b := randBytes(r, n, r.IntN(3) == 0)
							err = block.WriteAt(f, b, off)
							copy(model[off-lo:], b)
						}
						if err != nil {
							fail("region %d round %d: %v", g, round, err)
							return
						}
						if err := block.ReadAt(f, got, lo); err != nil {
							fail("region %d read: %v", g, err)
							return
						}
						if !bytes.Equal(got, model) {
							fail("region %d round %d: the region reads back wrong", g, round)
							return
						}
					}
				})
			}
			wg.Wait()
			stop.Store(true)
			side.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			t.Logf("%v", f.Metrics())
		})
	}
}

// queueRegion writes random aligned blocks of [lo, hi) through a queue
// of f, checking the region after each batch.
func queueRegion(f *File, lo, hi int64, model []byte, rounds int, fail func(string, ...any), stop *atomic.Bool) {
	q, err := f.NewQueue(8)
	if err != nil {
		fail("NewQueue: %v", err)
		return
	}
	defer q.Close()
	r := rand.New(rand.NewPCG(77, 46))
	const bs = 4096
	nb := (hi - lo) / bs
	out := make([]*block.Req, 8)
	got := make([]byte, hi-lo)
	for round := 0; round < rounds && !stop.Load(); round++ {
		// A run of adjacent blocks (they merge, U13) from a random block.
		first := r.Int64N(nb)
		k := 1 + r.Int64N(nb-first)
		reqs := make([]*block.Req, k)
		for i := range reqs {
			off := lo + (first+int64(i))*bs
			b := randBytes(r, bs, false)
			copy(model[off-lo:], b)
			reqs[i] = &block.Req{Op: block.OpWrite, Off: off, Buf: b}
		}
		if err := q.Submit(reqs...); err != nil {
			fail("submit: %v", err)
			return
		}
		for done := 0; done < len(reqs); {
			n, err := q.Wait(out, len(reqs)-done)
			if err != nil {
				fail("wait: %v", err)
				return
			}
			for _, req := range out[:n] {
				if req.Err != nil {
					fail("queued write at %d: %v", req.Off, req.Err)
					return
				}
			}
			done += n
		}
		rd := &block.Req{Op: block.OpRead, Off: lo, Buf: got}
		if err := q.Submit(rd); err != nil {
			fail("submit read: %v", err)
			return
		}
		if _, err := q.Wait(out, 1); err != nil || rd.Err != nil {
			fail("queued read: %v %v", err, rd.Err)
			return
		}
		if !bytes.Equal(got, model) {
			fail("queue region round %d: reads back wrong", round)
			return
		}
	}
}
