package nbdqcow2

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// TestNode_ShortBackingAnswerMatchesQemu: Node is a raw node over
// a qcow2 node as qemu-nbd reports it. Over a backing file shorter than
// the image, QEMU's qcow2 answers an unallocated run up to the end of
// the L2 table and decides zero by the answer's start only, so a run
// that starts within the backing file is no zero past its end either
// (qemu-nbd over st.qcow2 below: a hole, not zero, from 528384 to 2M).
// Node stopped the run where BlockStatus did and answered zero from
// there on.
func TestNode_ShortBackingAnswerMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	short, top := filepath.Join(d, "s.qcow2"), filepath.Join(d, "st.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", short, "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", short, "-F", "qcow2", top, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 5 512k 4k", "-c", "write -P 5 2M 64k", top)
	im, err := qcow2.Open(top, qcow2.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	n := Node{Image: im}
	for off := int64(528384); off < 2<<20; {
		e, err := n.Extent(off, 2<<20-off)
		if err != nil {
			t.Fatal(err)
		}
		if e.Zero || !e.Hole || e.Depth != 0 {
			t.Fatalf("extent at %d: %+v, qemu-nbd: a hole, not zero, at depth 0 up to 2M", off, e)
		}
		off += e.Len
	}
}
