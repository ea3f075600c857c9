package nbdqcow2

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

// TestExtentMatchesMap: walking Extent over a three-layer chain (raw
// base, qcow2 middle, qcow2 top with data, zero and discarded clusters)
// agrees with the engine's Map, which qimg map prints.
func TestExtentMatchesMap(t *testing.T) {
	dir := t.TempDir()
	const cl = 64 << 10
	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, make([]byte, 6*cl), 0o644); err != nil { // shorter than the top
		t.Fatal(err)
	}
	mid, top := filepath.Join(dir, "mid.qcow2"), filepath.Join(dir, "top.qcow2")
	if err := qcow2.Create(mid, qcow2.CreateOptions{Size: 16 * cl, ClusterSize: cl, BackingFile: base, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	if err := qcow2.Create(top, qcow2.CreateOptions{Size: 16 * cl, ClusterSize: cl, BackingFile: mid, BackingFormat: "qcow2"}); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, cl)
	for i := range data {
		data[i] = 1
	}
	im, err := qcow2.Open(mid, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(block.WriteAt(im, data, 2*cl))
	must(block.WriteAt(im, data, 9*cl))
	must(im.Close())
	im, err = qcow2.Open(top, qcow2.Options{})
	must(err)
	defer func() {
		must(im.Close())
		// The images written here must be sound for us and QEMU.
		for _, p := range []string{mid, top} {
			imgcheck.File(t, p, qcow2.Options{})
		}
	}()
	must(block.WriteAt(im, data, 0))
	must(im.WriteZeroes(cl, cl, 0))
	must(block.WriteAt(im, data, 4*cl))
	must(im.WriteZeroes(12*cl, 2*cl, block.MayUnmap))

	m, err := im.Map()
	must(err)
	var want []string
	for _, e := range m {
		depth := e.Depth + 1
		if !e.Present {
			// Past the end of a shorter backing layer (Map shows the
			// layer above it, not present): the zeros are that short
			// layer's, as qemu-nbd's allocation depth says.
			depth = e.Depth + 2
		}
		want = append(want, fmt.Sprintf("%d+%d hole=%v zero=%v depth=%d", e.Start, e.Length, !e.Data, e.Zero, depth))
	}
	var got []string
	s := Status{im}
	size, _ := im.Size()
	for off := int64(0); off < size; {
		e, err := s.Extent(off, size-off)
		must(err)
		if e.Len <= 0 {
			t.Fatalf("empty extent at %d", off)
		}
		line := fmt.Sprintf("hole=%v zero=%v depth=%d", e.Hole, e.Zero, e.Depth)
		if k := len(got); k > 0 {
			var o, n int64
			var rest string
			fmt.Sscanf(got[k-1], "%d+%d", &o, &n)
			rest = got[k-1][len(fmt.Sprintf("%d+%d ", o, n)):]
			if rest == line && o+n == off {
				got[k-1] = fmt.Sprintf("%d+%d %s", o, n+e.Len, line)
				off += e.Len
				continue
			}
		}
		got = append(got, fmt.Sprintf("%d+%d %s", off, e.Len, line))
		off += e.Len
	}
	// Map splits runs by host offset too: merge its neighbours the same way.
	var wantMerged []string
	for _, w := range want {
		var o, n int64
		fmt.Sscanf(w, "%d+%d", &o, &n)
		rest := w[len(fmt.Sprintf("%d+%d ", o, n)):]
		if k := len(wantMerged); k > 0 {
			var po, pn int64
			fmt.Sscanf(wantMerged[k-1], "%d+%d", &po, &pn)
			if wantMerged[k-1][len(fmt.Sprintf("%d+%d ", po, pn)):] == rest {
				wantMerged[k-1] = fmt.Sprintf("%d+%d %s", po, pn+n, rest)
				continue
			}
		}
		wantMerged = append(wantMerged, w)
	}
	if fmt.Sprint(got) != fmt.Sprint(wantMerged) {
		t.Fatalf("Extent walk:\n%v\nMap:\n%v", got, wantMerged)
	}
	t.Log(got)
}

// TestExtentHostHoles: on an image whose metadata was preallocated, the
// clusters are mapped over holes of the host file; qemu-nbd reports
// those as zeros (NBD_STATE_ZERO, not a hole), as QEMU's block status
// recurses into the file there; Extent called them data (review 53).
func TestExtentHostHoles(t *testing.T) {
	s := Status{preallocatedImage(t)}
	for _, c := range []struct {
		off, n int64
		zero   bool
	}{{0, 1 << 20, true}, {1 << 20, 64 << 10, false}, {2 << 20, 1 << 20, true}} {
		e, err := s.Extent(c.off, c.n)
		if err != nil {
			t.Fatal(err)
		}
		if e.Hole || e.Zero != c.zero || e.Len <= 0 || e.Len > c.n {
			t.Errorf("extent at %d: %+v, want hole=false zero=%v within %d bytes", c.off, e, c.zero, c.n)
		}
	}
}

// preallocatedImage is a 16 MiB image qemu-img created with
// preallocation=metadata (its clusters mapped over holes of the host
// file) and qemu-io wrote 64 KiB at 1 MiB into, open read-only.
func preallocatedImage(t *testing.T) *qcow2.Image {
	t.Helper()
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "pm.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", p, "16M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 7 1M 64k", p)
	im, err := qcow2.Open(p, qcow2.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	return im
}
