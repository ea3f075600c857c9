package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestRegress_RebuildCapsOverflowedCounts: with 1-bit refcounts, a
// cluster two L2 entries name holds more references than a refcount
// does. A Check -r all that must rebuild (a cluster in use counted 0)
// refused the whole rebuild for it, left the cluster in use counted 0,
// and still said it had repaired; the next write overwrote that
// cluster's guest data. As QEMU, the rebuild writes the largest count
// the width holds, and the overflow stays a corruption (review 53).
func TestRegress_RebuildCapsOverflowedCounts(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "rb1.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x11 0 128k", "-c", "write -P 0x22 1M 64k", p)
	b, h := fileAndHeader(t, p)
	be := binary.BigEndian
	cs := uint64(1) << h.ClusterBits
	l2 := be.Uint64(b[h.L1TableOffset:]) & 0x00fffffffffffe00
	// Guest 1M is entry 16 of the first table (64 KiB clusters).
	data := be.Uint64(b[l2+16*8:]) & 0x00fffffffffffe00
	be.PutUint64(b[l2+8:], be.Uint64(b[l2:])) // entry 1 names entry 0's cluster
	blk := be.Uint64(b[h.RefcountTableOffset:])
	k := data / cs
	b[blk+k/8] &^= 1 << (k % 8) // guest 1M's cluster counted 0
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := checkFile(t, p, RepairAll)
	msgs := strings.Join(r.Messages, "\n")
	if err != nil || r.CheckErrors != 0 || !strings.Contains(msgs, "Rebuilding refcount structure") {
		t.Fatalf("-r all: %v, %d check errors: %v", err, r.CheckErrors, head(r.Messages, 8))
	}
	if r.Corruptions == 0 || !strings.Contains(msgs, "overflow") {
		t.Errorf("the overflow is not reported after the rebuild: %d corruptions: %v", r.Corruptions, head(r.Messages, 8))
	}
	// The data cluster is counted again: a new cluster goes elsewhere.
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0xee 40M 64k", p)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 0x22 1M 64k", "-c", "read -P 0xee 40M 64k", p)
	if res, err := testkit.QemuImgCheck(p); err != nil || res.Leaks != 0 {
		t.Errorf("qemu-img check after the repair: %+v, %v", res, err)
	}
}

// TestRegress_CheckL1CopiedWithoutTable: an L1 entry that is only the
// COPIED flag names no table; Check took it for unallocated and found
// nothing, so -r all said the image was clean while qemu-img check
// still reported it (review 53). It is a corruption, repaired by
// clearing the entry (reads already take it for unallocated).
func TestRegress_CheckL1CopiedWithoutTable(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "l1.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "2G")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x22 1M 64k", p)
	b, h := fileAndHeader(t, p)
	binary.BigEndian.PutUint64(b[h.L1TableOffset+8:], format.OflagCopied) // L1[1]
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, repair := range []RepairMode{RepairNone, RepairAll} {
		r, err := checkFile(t, p, repair)
		found, fixed := 1, 0 // what is left, and what was fixed
		if repair == RepairAll {
			found, fixed = 0, 1
		}
		if err != nil || r.Corruptions != found || r.CorruptionsFixed != fixed {
			t.Errorf("repair %v: %v, %d corruptions (%d fixed): %v", repair, err, r.Corruptions, r.CorruptionsFixed, head(r.Messages, 4))
		}
	}
	testkit.QemuCheck(t, p)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 0x22 1M 64k", "-c", "read -P 0 1G 64k", p)
}

// fileAndHeader reads the image file at p whole (to damage it) and its
// header.
func fileAndHeader(t *testing.T, p string) ([]byte, *format.Header) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := format.ParseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, h
}
