package qcow2

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/qcow2/format"
)

// dirtyLazyImage is a lazy-refcount image left dirty with the refcount
// of its one data cluster lost, as a crash leaves it.
func dirtyLazyImage(t *testing.T) []byte {
	t.Helper()
	b := oneClusterImage(t, CreateOptions{Size: 1 << 20, ClusterSize: 4096, LazyRefcounts: true})
	be := binary.BigEndian
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & format.L1OffsetMask
	data := be.Uint64(b[l2:]) & format.L2OffsetMask
	refblock := be.Uint64(b[be.Uint64(b[48:]):])
	be.PutUint16(b[refblock+data/4096*2:], 0)
	be.PutUint64(b[72:], be.Uint64(b[72:])|format.IncompatDirty)
	return b
}

// TestOpen_RepairDefersDirtyRepair: an open for repair (QEMU's
// BDRV_O_CHECK) leaves a dirty image's refcounts to the caller's Check:
// nothing is written before it (a write would trust the lost count), -r
// leaks refuses and changes nothing, and -r all repairs, clears the
// dirty bit and lets writes through.
func TestOpen_RepairDefersDirtyRepair(t *testing.T) {
	b := dirtyLazyImage(t)
	orig := append([]byte(nil), b...)
	d := memdev.FromBytes(b, memdev.Options{})
	im, err := OpenDevice(d, Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(pattern(4096, 2), 8192); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write before the repair: %v", err)
	}
	if !im.ReadOnly() {
		t.Error("ReadOnly() is false while writes are refused")
	}
	r, err := im.Check(CheckOptions{Repair: RepairLeaks})
	if err != nil || r.CheckErrors == 0 || r.LeaksFixed != 0 || r.CorruptionsFixed != 0 {
		t.Fatalf("-r leaks: %v %+v", err, r)
	}
	if string(d.Bytes()) != string(orig) {
		t.Fatal("-r leaks changed the image")
	}
	if r, err = im.Check(CheckOptions{Repair: RepairAll}); err != nil || !r.Clean() || r.CorruptionsFixed == 0 {
		t.Fatalf("-r all: %v %+v", err, r)
	}
	if binary.BigEndian.Uint64(d.Bytes()[72:])&format.IncompatDirty != 0 {
		t.Error("the dirty bit stayed after -r all")
	}
	if im.ReadOnly() {
		t.Error("ReadOnly() after the repair")
	}
	writeAt(t, im, 8192, pattern(4096, 2))
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im, err = OpenDevice(memdev.FromBytes(d.Bytes(), memdev.Options{}), Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	if r, err := im.Check(CheckOptions{}); err != nil || !r.Clean() {
		t.Fatalf("after: %v %+v", err, r)
	}
}
