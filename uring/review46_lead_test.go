//go:build linux

package uring

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
)

// TestReview46_TinyRingMixedKinds (R2, R3, R7, R8): on rings of one and
// four slots, goroutines mix what the ring treats differently: staged and
// merged writes, reads, standalone fsyncs and fallocates (ring.slow),
// and linked fallocate+write pairs. No waiter may sleep forever (the
// leader token, submit-only enters beside a slow request), no linked
// pair may be split by a to_submit, and every goroutine's region reads
// back as it wrote it. The generous bound only catches a hang.
func TestReview46_TinyRingMixedKinds(t *testing.T) {
	for _, entries := range []int{1, 4} {
		for _, direct := range []bool{false, true} {
			t.Run(fmt.Sprintf("entries=%d/direct=%v", entries, direct), func(t *testing.T) {
				f := openTemp(t, Options{Backend: Ring, Direct: direct, Entries: entries})
				const g, rounds, cluster = 12, 40, 64 << 10
				// Prime Allocate, so ZeroThenWritev links (U4).
				if f.Caps().ZeroFlags&block.Allocate != 0 {
					if err := f.WriteZeroes(0, cluster, block.Allocate); err != nil {
						t.Fatal(err)
					}
				}
				errc := make(chan error, g)
				var wg sync.WaitGroup
				ok := testkit.Within(2*time.Minute, func() {
					for k := range g {
						wg.Go(func() {
							base := int64(k+1) * 4 * cluster
							model := make([]byte, 4*cluster)
							strip := block.AlignedBuf(4096, block.DefaultMemAlign)
							for i := range rounds {
								var err error
								switch i % 5 {
								case 0: // its block of a strip all write: merge candidates
									copy(strip, pattern(uint64(k*rounds+i)^0x5a, 4096))
									err = block.WriteAt(f, strip, int64(k)*4096)
								case 1:
									off := int64(i%16) * 4096
									b := pattern(uint64(k*rounds+i), 4096)
									copy(model[off:], b)
									err = block.WriteAt(f, b, base+off)
								case 2:
									err = f.Flush()
								case 3:
									c := int64(1 + i%3)
									b := pattern(uint64(k*rounds+i)^0xff, 4096)
									if f.Caps().ZeroFlags&block.Allocate != 0 {
										err = f.ZeroThenWritev(base+c*cluster, cluster, block.Allocate, base+c*cluster+4096, [][]byte{b})
										clear(model[c*cluster : (c+1)*cluster])
									} else {
										err = f.WriteZeroes(base+c*cluster, cluster, 0)
										clear(model[c*cluster : (c+1)*cluster])
										if err == nil {
											err = block.WriteAt(f, b, base+c*cluster+4096)
										}
									}
									copy(model[c*cluster+4096:], b)
								case 4:
									got := make([]byte, len(model))
									if err = block.ReadAt(f, got, base); err == nil && !bytes.Equal(got, model) {
										err = fmt.Errorf("goroutine %d round %d: region reads back wrong", k, i)
									}
									if err == nil {
										err = block.ReadAt(f, got[:4096], int64(k)*4096)
									}
									if err == nil && !bytes.Equal(got[:4096], strip) {
										err = fmt.Errorf("goroutine %d round %d: its strip block reads back wrong", k, i)
									}
								}
								if err != nil {
									errc <- err
									return
								}
							}
						})
					}
					wg.Wait()
				})
				if !ok {
					t.Fatalf("requests hang: %v", f.Metrics())
				}
				close(errc)
				for err := range errc {
					t.Fatal(err)
				}
				m := f.Metrics()
				if m.CQEs != m.SQEs || m.CQOverflows != 0 {
					t.Fatalf("%v", m)
				}
				t.Logf("%v", m)
			})
		}
	}
}
