package qcow2

import (
	"bytes"
	"errors"
	"testing"

	"github.com/qring/qring/block"
)

// TestWriteZeroes_AllocateUnalignedEdges: NO_FALLBACK (NBD's FAST_ZERO)
// over unaligned edges succeeds, as QEMU's does, when each edge's
// cluster reads as zeros already (it becomes a zero cluster: nothing is
// allocated, no zero buffer written), and is refused, changing nothing,
// when an edge's cluster holds data (qring refused every unaligned
// range before).
func TestWriteZeroes_AllocateUnalignedEdges(t *testing.T) {
	const cs = 64 << 10
	im, _ := testImage(t, CreateOptions{Size: 32 * cs, ClusterSize: cs}, Options{})
	writeAt(t, im, 8*cs, pattern(4096, 1))     // data in cluster 8
	writeAt(t, im, 10*cs+512, pattern(512, 2)) // and 10
	if err := im.WriteZeroes(3*cs, cs, 0); err != nil {
		t.Fatal(err)
	}
	before := im.Metrics().ClustersAllocated
	for _, c := range []struct{ off, n int64 }{
		{cs + 512, 4096},                // inside an unallocated cluster
		{2*cs + 100, 2*cs - 100 + 4096}, // unallocated edge, zero cluster, edge in cluster 4
		{5*cs - 512, 2*cs + 1024},       // edges in 4 and 7, whole 5 and 6
	} {
		if err := im.WriteZeroes(c.off, c.n, block.Allocate); err != nil {
			t.Errorf("WriteZeroes(%d, %d, Allocate): %v", c.off, c.n, err)
		}
	}
	if got := im.Metrics().ClustersAllocated; got != before {
		t.Errorf("%d clusters allocated by fast zeroing", got-before)
	}
	for _, c := range []int64{1, 2, 4, 7} {
		if !im.IsZeroFast(c*cs, cs) {
			t.Errorf("cluster %d is not a zero cluster", c)
		}
	}
	img := readBack(t, im, 0, 32*cs)
	for _, c := range []struct{ off, n int64 }{
		{8*cs + 4096, 512},         // the edge's cluster holds data
		{7*cs + 512, cs},           // the tail's does
		{10*cs - 512, 1024},        // the head is fine, the tail is not
		{9*cs + 1024, 2*cs - 2048}, // head 9 reads zeros, tail 10 holds data
	} {
		if err := im.WriteZeroes(c.off, c.n, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
			t.Errorf("WriteZeroes(%d, %d, Allocate) over data: %v, want ErrNotSupported", c.off, c.n, err)
		}
	}
	if !bytes.Equal(readBack(t, im, 0, 32*cs), img) {
		t.Error("a refused fast zeroing changed what the disk reads")
	}
}
