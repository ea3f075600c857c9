//go:build linux

package qcow2_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/uring/looptest"
)

// TestReview_FullFSConcurrentWritesReadBack: writers on io_uring with
// O_DIRECT (sequential and random, 4 KiB and 64 KiB) and a flusher run
// into a full ext4, where a reserve ahead fails part-way and is cut
// back: every acknowledged write reads back, open and after a reopen,
// and qemu-img check finds the image clean.
func TestReview_FullFSConcurrentWritesReadBack(t *testing.T) {
	d := looptest.Ext4Dir(t, 64<<20)
	for _, free := range []int64{3 << 20, 9 << 20, 13600 << 10, 17 << 20, 23 << 20} {
		t.Run(fmt.Sprintf("free=%dKiB", free>>10), func(t *testing.T) {
			p := filepath.Join(d, "img.qcow2")
			os.Remove(filepath.Join(d, "filler"))
			os.Remove(p)
			if err := qcow2.Create(p, qcow2.CreateOptions{Size: 256 << 20}); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(p)
			looptest.FillFS(t, d, free)
			op := qcow2.Opener(uring.Opener(uring.Options{Direct: true}))
			im, err := qcow2.Open(p, qcow2.Options{Opener: op})
			if err != nil {
				t.Fatal(err)
			}
			type wr struct {
				off  int64
				n    int
				seed byte
			}
			var mu sync.Mutex
			var acked []wr
			failedAt := map[int64]bool{}
			var wg sync.WaitGroup
			const G = 4
			stripe := int64(256<<20) / G
			for w := 0; w < G; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 9))
					base := int64(w) * stripe
					fails := 0
					for i := 0; i < 600 && fails < 20; i++ {
						n := 4096
						if i%2 == 0 {
							n = 64 << 10
						}
						off := base + int64(i)*(64<<10)
						if w%2 == 1 {
							off = base + int64(rng.IntN(int(stripe/(64<<10))))*(64<<10)
						}
						s := byte(w*50+i) | 1
						buf := bytes.Repeat([]byte{s}, n)
						if _, err := im.WriteAt(buf, off); err != nil {
							if !errors.Is(err, syscall.ENOSPC) {
								t.Errorf("write %d: %v", off, err)
							}
							fails++
							// A failed write may have landed in part:
							// its place is not checked.
							mu.Lock()
							failedAt[off] = true
							mu.Unlock()
							continue
						}
						mu.Lock()
						acked = append(acked, wr{off, n, s})
						mu.Unlock()
						if i%16 == 0 {
							im.Flush()
						}
					}
				}(w)
			}
			wg.Wait()
			// Last write to each place wins; keep only places written once.
			cnt := map[int64]int{}
			for _, a := range acked {
				cnt[a.off]++
			}
			verify := func(im *qcow2.Image, what string) {
				bad := 0
				for _, a := range acked {
					if cnt[a.off] != 1 || failedAt[a.off] {
						continue
					}
					got := make([]byte, a.n)
					if _, err := im.ReadAt(got, a.off); err != nil {
						t.Fatalf("%s: read %d: %v", what, a.off, err)
					}
					if !bytes.Equal(got, bytes.Repeat([]byte{a.seed}, a.n)) {
						bad++
						if bad < 4 {
							t.Errorf("%s: acknowledged write %d+%d lost", what, a.off, a.n)
						}
					}
				}
			}
			verify(im, "open")
			if err := im.Close(); err != nil {
				t.Fatal(err)
			}
			im2, err := qcow2.Open(p, qcow2.Options{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			verify(im2, "reopened")
			im2.Close()
			os.Remove(filepath.Join(d, "filler"))
			testkit.QemuCheck(t, p)
			t.Logf("%d writes acknowledged (%d KiB)", len(acked), func() (s int) {
				for _, a := range acked {
					s += a.n
				}
				return s >> 10
			}())
		})
	}
}
