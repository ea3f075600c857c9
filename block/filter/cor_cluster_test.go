package filter_test

import (
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// clusteredAlloc is a memAlloc top that allocates in clusters of size
// c (filter.ClusterSizer).
type clusteredAlloc struct {
	*memAlloc
	c int64
}

func (a clusteredAlloc) ClusterSize() int64 { return a.c }

// TestCopyOnRead_WholeClusters: a read of part of a cluster the top does
// not allocate copies the whole cluster, as QEMU rounds a copy out to the
// top's clusters; the parts of the rounding a guest wrote meanwhile keep
// the guest's bytes (FL5), and so do concurrent writes under reads.
func TestCopyOnRead_WholeClusters(t *testing.T) {
	const size, cs = 1 << 20, 4096
	data := randBytes(rand.New(rand.NewPCG(testkit.Seed(t), 3)), size)
	src := memdev.FromBytes(data, memdev.Options{})
	top := clusteredAlloc{newMemAlloc(size), cs}
	cor := filter.NewCopyOnRead(top, src)
	defer cor.Close()
	want := append([]byte(nil), data...)
	// A guest write into the second half of cluster 1, then a read of
	// 100 bytes in its first half.
	guest := []byte("guest bytes")
	if err := block.WriteAt(cor, guest, cs+3000); err != nil {
		t.Fatal(err)
	}
	copy(want[cs+3000:], guest)
	buf := make([]byte, 100)
	if err := block.ReadAt(cor, buf, cs+500); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, buf, want[cs+500:cs+600], "the read")
	for off := int64(cs); off < 2*cs; {
		a, l, _ := top.Allocated(off, 2*cs-off)
		if !a {
			t.Fatalf("[%d, +%d) of the read's cluster not copied", off, l)
		}
		off += l
	}
	if a, _, _ := top.Allocated(0, cs); a {
		t.Fatal("cluster 0 copied by a read of cluster 1")
	}
	if got := cor.M.CopiedBytes.Load(); got != cs-int64(len(guest)) {
		t.Fatalf("copied %d bytes, want the cluster less the guest's %d", got, len(guest))
	}
	testkit.MustEqual(t, testkit.ReadAll(t, top.Dev)[cs:2*cs], want[cs:2*cs], "the top's copy of cluster 1")

	// Concurrent unaligned reads and writes: the top ends as the source
	// with the guest writes over it.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 11))
			rb := make([]byte, 3*cs+17)
			for range 200 {
				off := r.Int64N(size - int64(len(rb)))
				if g%2 == 0 {
					p := randBytes(r, 1+r.IntN(300))
					mu.Lock()
					if err := block.WriteAt(cor, p, off); err != nil {
						t.Error(err)
					}
					copy(want[off:], p)
					mu.Unlock()
				} else if err := block.ReadAt(cor, rb, off); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	testkit.MustEqual(t, testkit.ReadAll(t, cor), want, "through copy-on-read")
	testkit.MustEqual(t, testkit.ReadAll(t, top.Dev), want, "top after a full read")
}
