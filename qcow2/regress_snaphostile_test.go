package qcow2

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// ApplySnapshot of a snapshot whose second L2 table holds an entry with
// an unaligned host offset was refused only after the refcounts of every
// cluster its first L2 table names were raised and made durable (no
// undo, unlike a refcount overflow): the file changed, with hundreds of
// leaked clusters (review 53). Its tables are read through first now.
func TestRegress_ApplyHostileSnapshotLeavesFile(t *testing.T) {
	p := filepath.Join(testkit.Dir(t), "h.qcow2")
	if err := Create(p, CreateOptions{Size: 4 << 20, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(pattern(4<<20, 1), 0); err != nil {
		t.Fatal(err)
	}
	sn, err := im.CreateSnapshot("s1")
	if err != nil {
		t.Fatal(err)
	}
	// copy both active L2 tables away from the snapshot's
	if _, err := im.WriteAt(pattern(4096, 2), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(pattern(4096, 3), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	f.ReadAt(b[:], int64(sn.L1TableOffset)+8)
	l2 := int64(binary.BigEndian.Uint64(b[:]) & 0x00fffffffffffe00)
	f.ReadAt(b[:], l2+8*100)
	binary.BigEndian.PutUint64(b[:], binary.BigEndian.Uint64(b[:])|0x200)
	f.WriteAt(b[:], l2+8*100)
	f.Close()
	before, _ := os.ReadFile(p)

	// Repair: the invariants' check at a flush would find the hostile
	// table itself (Close flushes).
	im, err = Open(p, Options{Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	aerr := im.ApplySnapshot("s1")
	t.Logf("ApplySnapshot: %v", aerr)
	if err := im.Close(); err != nil {
		t.Logf("Close: %v", err)
	}
	after, _ := os.ReadFile(p)
	if aerr == nil {
		t.Fatal("the hostile snapshot was applied")
	}
	ro, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := ro.Check(CheckOptions{})
	ro.Close()
	if !bytes.Equal(before, after) {
		t.Errorf("the refused apply changed the file; check now finds %d leaks: %v", r.Leaks, head(r.Messages, 3))
	}
}
