package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// TestRegress_RefusedDirtyRepairKeepsDirtyBit: a dirty image (lazy refcounts) whose repair at a writable open leaves a
// corruption (an L2 entry with reserved bits): the open is refused, and
// repairDirty says the dirty bit stays "as it is on disk". It must: the
// refcounts did not count the bad entry's cluster.
func TestRegress_RefusedDirtyRepairKeepsDirtyBit(t *testing.T) {
	im, mem := memImage(t, CreateOptions{Size: 4 << 20, ClusterSize: 4096, LazyRefcounts: true}, Options{NoBacking: true}, memdev.Options{})
	for _, off := range []int64{0, 1 << 20} {
		if _, err := im.WriteAt(bytes.Repeat([]byte{0x11}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	b := mem.Bytes()
	be := binary.BigEndian
	be.PutUint64(b[72:], be.Uint64(b[72:])|format.IncompatDirty) // dirty
	l1 := be.Uint64(b[40:])
	l2 := be.Uint64(b[l1:]) & 0x00fffffffffffe00
	be.PutUint64(b[l2:], be.Uint64(b[l2:])|0x100) // reserved bit in entry 0
	// and a lost refcount update (what a crash with lazy refcounts
	// leaves): the data cluster of guest offset 1 MiB counted 0.
	data := be.Uint64(b[l2+8*256:]) & 0x00fffffffffffe00
	rt := be.Uint64(b[48:])
	rb := be.Uint64(b[rt:])
	be.PutUint16(b[rb+2*(data/4096):], 0)
	orig := append([]byte(nil), b...)

	mem2 := memdev.FromBytes(b, memdev.Options{})
	im2, err := OpenDevice(mem2, Options{NoBacking: true})
	if err == nil {
		im2.Close()
		t.Fatal("writable open accepted the image")
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open: %v", err)
	}
	after := mem2.Bytes()
	if be.Uint64(after[72:])&format.IncompatDirty == 0 {
		t.Errorf("refused open cleared the dirty bit on disk (incompatible %#x); the image changed: %v",
			be.Uint64(after[72:]), !bytes.Equal(orig, after))
	}
}
