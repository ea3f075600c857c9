package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/memdev"
)

// slowPunch is a data file whose holes take a while, so that writes
// into the clusters being punched run meanwhile (DF7).
type slowPunch struct {
	*memdev.Dev
	punches atomic.Int64
}

func (d *slowPunch) WriteZeroes(off, n int64, f block.Flags) error {
	if f&block.MayUnmap != 0 {
		d.punches.Add(1)
		time.Sleep(20 * time.Microsecond)
	}
	return d.Dev.WriteZeroes(off, n, f)
}

// Discards and unmapping zero writes race writes into the clusters they
// drop (DF7): a cluster that a write linked again after the drop keeps
// that write's data, so that at the end every cluster that maps data
// holds the last data written there, and every other reads as zeros.
func TestDataFile_PunchRacesWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		xl2  bool
		raw  bool
	}{{"plain", false, false}, {"raw", false, true}, {"xl2", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			const cs, nc, writers = 64 << 10, 32, 4
			img, mem := dfMemImage(t, CreateOptions{Size: nc * cs, ClusterSize: cs, ExtendedL2: tc.xl2}, tc.raw)
			data := &slowPunch{Dev: mem}
			im, err := OpenDevice(img, Options{DataDevice: data})
			if err != nil {
				t.Fatal(err)
			}
			var last [nc]byte // per cluster: the pattern of the last write acknowledged
			var stop atomic.Bool
			var wg sync.WaitGroup
			errs := make(chan error, writers+2)
			for w := range writers {
				wg.Go(func() {
					buf := make([]byte, cs)
					got := make([]byte, cs)
					r := rand.New(rand.NewPCG(uint64(w), 1))
					for i := 1; !stop.Load(); i++ {
						c := w + writers*r.IntN(nc/writers)
						p := byte(i%250) + 1
						for k := range buf {
							buf[k] = p
						}
						if err := im.Writev(int64(c*cs), [][]byte{buf}); err != nil {
							errs <- err
							return
						}
						last[c] = p // this goroutine's clusters only
						if err := im.Readv(int64(c*cs), [][]byte{got}); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(got, buf) && !bytes.Equal(got, make([]byte, cs)) {
							errs <- fmt.Errorf("cluster %d reads neither its write (%#x) nor zeros: %#x", c, p, got[0])
							return
						}
					}
				})
			}
			for d := range 2 {
				wg.Go(func() {
					r := rand.New(rand.NewPCG(uint64(d), 2))
					for !stop.Load() {
						a := r.IntN(nc)
						b := a + 1 + r.IntN(nc-a)
						var err error
						if d == 0 {
							err = im.Discard(int64(a*cs), int64((b-a)*cs))
						} else {
							err = im.WriteZeroes(int64(a*cs), int64((b-a)*cs), block.MayUnmap)
						}
						if err != nil {
							errs <- err
							return
						}
					}
				})
			}
			time.Sleep(time.Second)
			stop.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if data.punches.Load() == 0 {
				t.Fatal("no hole was punched in the data file")
			}
			got := make([]byte, cs)
			for c := range nc {
				st, err := im.BlockStatus(int64(c*cs), cs)
				if err != nil {
					t.Fatal(err)
				}
				if err := im.Readv(int64(c*cs), [][]byte{got}); err != nil {
					t.Fatal(err)
				}
				want := make([]byte, cs)
				if st.Data {
					for k := range want {
						want[k] = last[c]
					}
				}
				if !bytes.Equal(got, want) {
					t.Errorf("cluster %d (data %v): reads %#x, want %#x", c, st.Data, got[0], want[0])
				}
			}
			r, err := im.Check(CheckOptions{})
			if err != nil || !r.Clean() {
				t.Fatalf("check: %v %+v", err, r)
			}
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// With Options.NoPassDiscard (QEMU's pass-discard-request off) the data
// file keeps its bytes; without it the dropped clusters become holes.
func TestDataFile_NoPassDiscardKeepsData(t *testing.T) {
	const cs = 64 << 10
	for _, pass := range []bool{true, false} {
		img, data := dfMemImage(t, CreateOptions{Size: 8 * cs, ClusterSize: cs}, false)
		im, err := OpenDevice(img, Options{DataDevice: data, NoPassDiscard: !pass})
		if err != nil {
			t.Fatal(err)
		}
		if err := im.Writev(0, [][]byte{bytes.Repeat([]byte{7}, 4*cs)}); err != nil {
			t.Fatal(err)
		}
		if err := im.Discard(0, 2*cs); err != nil {
			t.Fatal(err)
		}
		if err := im.WriteZeroes(2*cs, cs, block.MayUnmap); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 4*cs)
		if err := data.Readv(0, [][]byte{got}); err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte{7}, 4*cs)
		if pass {
			clear(want[:3*cs])
		}
		if !bytes.Equal(got, want) {
			t.Errorf("pass-discard %v: the data file holds %#x %#x %#x %#x at its clusters", pass, got[0], got[cs], got[2*cs], got[3*cs])
		}
	}
}
