package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// crashReserveDev fails the first reserve (WriteZeroes with Allocate)
// that reaches past limit with ENOSPC after growing the file over part
// of it (ext4's ZERO_RANGE out of space), and takes crash clones around
// it: right after the failure, after the truncate that gives the space
// back, and at some writes after.
type crashReserveDev struct {
	*memdev.Dev
	limit   int64
	failed  atomic.Bool
	rng     *rand.Rand
	mu      sync.Mutex
	durable func() int // writes acknowledged before a completed flush
	clones  []reviewClone
	writes  atomic.Int64
}

type reviewClone struct {
	dev     *memdev.Dev
	durable int
	what    string
}

func (d *crashReserveDev) clone(what string) {
	n := d.durable()
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.clones) >= 48 {
		return
	}
	d.clones = append(d.clones, reviewClone{d.Dev.CrashClone(d.rng, 0.5), n, what})
}

func (d *crashReserveDev) WriteZeroes(off, n int64, flags block.Flags) error {
	if flags&block.Allocate != 0 && off+n > d.limit && !d.failed.Load() {
		if off < d.limit {
			if sz, _ := d.Dev.Size(); sz < d.limit {
				d.Dev.Truncate(d.limit)
			}
		}
		d.failed.Store(true)
		d.clone("after the failed reserve")
		return syscall.ENOSPC
	}
	return d.Dev.WriteZeroes(off, n, flags)
}

func (d *crashReserveDev) Truncate(size int64) error {
	err := d.Dev.Truncate(size)
	if d.failed.Load() {
		d.clone(fmt.Sprintf("after truncate %d", size))
	}
	return err
}

func (d *crashReserveDev) Writev(off int64, v [][]byte) error {
	err := d.Dev.Writev(off, v)
	if k := d.writes.Add(1); d.failed.Load() && k%7 == 0 {
		d.clone(fmt.Sprintf("after write %d+%d", off, block.VecLen(v)))
	}
	return err
}

// TestReview_ReserveFailsPartWayUnderLoad: writers (sequential and
// random, 4 KiB and 64 KiB), a flusher and the filler run while a
// reserve ahead fails part-way; at crash clones around the failure and
// after, the image is free of corruption and every write acknowledged
// before a completed flush reads back; every other block reads its
// data or zeros, sector by sector. At the end everything reads back
// and both checks find the image clean. Under the race detector one
// configuration of a quarter of the blocks (the whole test took over
// ten minutes there); make test runs all twelve without it too
// (FULLSIZE).
func TestReview_ReserveFailsPartWayUnderLoad(t *testing.T) {
	const size = 128 << 20
	const bs = 4096
	rng := testkit.Rand(t)
	iters, blocks := 12, 1200
	if raceEnabled {
		iters, blocks = 1, 300
	}
	for iter := 0; iter < iters; iter++ {
		limit := int64(1<<20 + rng.IntN(24<<20))
		align := int64(1)
		if iter%3 == 2 {
			align = 4096
		}
		fill := []string{FillZeroes, FillUnwritten}[iter%2]
		cs := []int{64 << 10, 64 << 10, 16 << 10, 4 << 10}[iter%4]
		t.Run(fmt.Sprintf("%d/limit=%d/align=%d/%s/cs=%d", iter, limit, align, fill, cs), func(t *testing.T) {
			mem := memdev.New(memdev.Options{Media: block.MediaRAM, Align: align})
			if err := CreateDevice(mem, CreateOptions{Size: size, ClusterSize: cs}); err != nil {
				t.Fatal(err)
			}
			type wr struct {
				off  int64
				n    int
				seed byte
			}
			var (
				ackMu sync.Mutex
				acked []wr
				dur   atomic.Int64
			)
			d := &crashReserveDev{Dev: mem, limit: limit, rng: rand.New(rand.NewPCG(rng.Uint64(), 1)),
				durable: func() int { return int(dur.Load()) }}
			im, err := OpenDevice(d, Options{PreallocSize: 2 << 20, PreallocFill: fill})
			if err != nil {
				t.Fatal(err)
			}
			// Unique 64 KiB guest blocks, shuffled; each writer writes its
			// share in 4 KiB or 64 KiB requests, each block once.
			nb := blocks
			perm := rng.Perm(size / (64 << 10))[:nb]
			const G = 6
			var wg sync.WaitGroup
			stop := make(chan struct{})
			var seedCtr atomic.Int32
			for w := 0; w < G; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for i := w; i < nb; i += G {
						b := int64(perm[i])
						if w%2 == 0 {
							b = int64(i) // sequential
						}
						off := b * (64 << 10)
						chunks := 1
						n := 64 << 10
						if i%3 == 0 {
							chunks, n = 16, bs
						}
						for c := 0; c < chunks; c++ {
							s := byte(seedCtr.Add(1))
							p := pattern(n, s|1)
							o := off + int64(c*n)
							if _, err := im.WriteAt(p, o); err != nil {
								t.Errorf("write %d: %v", o, err)
								return
							}
							ackMu.Lock()
							acked = append(acked, wr{o, n, s | 1})
							ackMu.Unlock()
						}
					}
				}(w)
			}
			var fwg sync.WaitGroup
			fwg.Add(1)
			go func() {
				defer fwg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					ackMu.Lock()
					n := len(acked)
					ackMu.Unlock()
					if err := im.Flush(); err != nil {
						t.Errorf("flush: %v", err)
						return
					}
					if int64(n) > dur.Load() {
						dur.Store(int64(n))
					}
				}
			}()
			wg.Wait()
			close(stop)
			fwg.Wait()
			if !d.failed.Load() {
				t.Logf("no reserve reached the limit")
			}
			ackMu.Lock()
			all := append([]wr(nil), acked...)
			ackMu.Unlock()
			// The written blocks do not overlap: sequential writers use
			// blocks 0..nb, random ones the permutation, which may meet
			// them. Keep only writes whose range no other write covers.
			owner := map[int64]int{}
			for i, w := range all {
				for o := w.off; o < w.off+int64(w.n); o += bs {
					if _, ok := owner[o]; ok {
						owner[o] = -1
					} else {
						owner[o] = i
					}
				}
			}
			single := func(i int) bool {
				w := all[i]
				for o := w.off; o < w.off+int64(w.n); o += bs {
					if owner[o] != i {
						return false
					}
				}
				return true
			}
			verify := func(im2 *Image, durable int, what string) {
				r, err := im2.Check(CheckOptions{})
				if err != nil || r.Corruptions != 0 || r.CheckErrors != 0 {
					t.Errorf("%s: check: %v, %d corruptions, %d errors: %v", what, err, r.Corruptions, r.CheckErrors, head(r.Messages, 4))
				}
				buf := make([]byte, 64<<10)
				bad := 0
				for i, w := range all {
					if !single(i) {
						continue
					}
					got := buf[:w.n]
					if _, err := im2.ReadAt(got, w.off); err != nil {
						t.Errorf("%s: read %d: %v", what, w.off, err)
						return
					}
					p := pattern(w.n, w.seed)
					if i < durable {
						if !bytes.Equal(got, p) {
							bad++
							if bad < 4 {
								t.Errorf("%s: flushed write %d+%d (#%d of %d durable) lost", what, w.off, w.n, i, durable)
							}
						}
						continue
					}
					for s := 0; s < w.n; s += 512 {
						g := got[s : s+512]
						if !bytes.Equal(g, p[s:s+512]) && !bytes.Equal(g, make([]byte, 512)) {
							bad++
							if bad < 4 {
								t.Errorf("%s: unflushed write %d+%d: sector %d holds neither its data nor zeros", what, w.off, w.n, s)
							}
							break
						}
					}
				}
			}
			d.mu.Lock()
			clones := d.clones
			d.mu.Unlock()
			for k, c := range clones {
				im2, err := OpenDevice(c.dev, Options{ReadOnly: true})
				if err != nil {
					t.Errorf("clone %d (%s): open: %v", k, c.what, err)
					continue
				}
				verify(im2, c.durable, fmt.Sprintf("clone %d (%s)", k, c.what))
				im2.Close()
				if k == 0 || k == len(clones)-1 {
					p := filepath.Join(t.TempDir(), "c.qcow2")
					if err := c.dev.WriteFile(p); err != nil {
						t.Fatal(err)
					}
					testkit.QemuCheckNoCorruption(t, p)
				}
			}
			verify(im, len(all), "open image")
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			im2, err := OpenDevice(mem, Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			verify(im2, len(all), "reopened")
			mustClean(t, im2)
			im2.Close()
			p := filepath.Join(t.TempDir(), "final.qcow2")
			if err := mem.WriteFile(p); err != nil {
				t.Fatal(err)
			}
			testkit.QemuCheck(t, p)
			t.Logf("%d writes, %d clones, failed=%v", len(all), len(clones), d.failed.Load())
		})
	}
}
