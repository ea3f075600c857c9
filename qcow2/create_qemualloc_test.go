package qcow2

import (
	"testing"

	"github.com/qring/qring/qcow2/format"
)

// TestQemuAlloc_L1LikeCreateLayout: the replayed allocator places a new
// image's L1 table and the refcount blocks it needs where
// qemuCreateLayout (checked against qemu-img by the create tests) puts
// them, for every geometry and size where that layout applies: the two
// models of QEMU's allocator agree.
func TestQemuAlloc_L1LikeCreateLayout(t *testing.T) {
	several := 0 // cases with more than one refcount block
	for cb := uint32(9); cb <= 21; cb += 2 {
		for _, ro := range []uint32{0, 4, 6} {
			g := format.NewGeometry(cb, ro, false)
			for _, size := range []uint64{1 << 20, 1 << 30, 1 << 36, 1 << 40} {
				nl1 := g.L1EntriesFor(size)
				if nl1*format.TableEntrySize > format.MaxL1Bytes {
					continue
				}
				n := l1Clusters(nl1, g.ClusterSize)
				blocks, total, ok := qemuCreateLayout(&g, n)
				if !ok {
					continue
				}
				if len(blocks) > 1 {
					several++
				}
				a := newQemuAlloc(&g)
				at, err := a.allocClusters(n)
				if err != nil {
					t.Fatal(err)
				}
				if at != 3 {
					t.Errorf("cb %d ro %d size %d: L1 at cluster %d, want 3", cb, ro, size, at)
				}
				for i := uint64(0); i < uint64(len(a.table)); i++ {
					want := uint64(0)
					if i < uint64(len(blocks)) {
						want = blocks[i]
					}
					if a.table[i] != want {
						t.Errorf("cb %d ro %d size %d: refcount block %d at %d, want %d", cb, ro, size, i, a.table[i], want)
					}
				}
				for c := uint64(0); c < total+2; c++ {
					if a.refcount(c) != (c < total) {
						t.Errorf("cb %d ro %d size %d: cluster %d counted %v, want %v", cb, ro, size, c, a.refcount(c), c < total)
						break
					}
				}
			}
		}
	}
	if several == 0 {
		t.Fatal("no case needs a second refcount block: the test shows nothing")
	}
}
