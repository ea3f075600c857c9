package qcow2

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestDeleteSnapshotEmptyL1: a snapshot whose L1 table has 0 entries
// names no cluster (QEMU's qcow2_snapshot_delete frees l1_size*8 = 0
// bytes; Check and the overlap checks count nothing for it either), so
// deleting it frees nothing at its L1 offset, even when that offset is
// the header's (it freed one cluster there; found by review).
func TestDeleteSnapshotEmptyL1(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, im, 0, pattern(8192, 1))
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	img := mem.Bytes()
	snapOff := binary.BigEndian.Uint64(img[64:])
	binary.BigEndian.PutUint64(img[snapOff:], 0)   // l1_table_offset
	binary.BigEndian.PutUint32(img[snapOff+8:], 0) // l1_size
	if testkit.HaveQemu() {
		p := filepath.Join(t.TempDir(), "in.qcow2")
		os.WriteFile(p, img, 0o644)
		out, _, code := testkit.Run(t, "qemu-img", "check", p)
		t.Logf("qemu-img check of the input (exit %d):\n%s", code, out)
	}
	d := memdev.FromBytes(img, memdev.Options{})
	im, err = OpenDevice(d, Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if r, err := im.Check(CheckOptions{}); err == nil {
		t.Logf("our check of the input: corruptions=%d leaks=%d", r.Corruptions, r.Leaks)
	}
	derr := im.DeleteSnapshot("s")
	t.Logf("DeleteSnapshot: %v", derr)
	r, err := im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 {
		t.Errorf("after DeleteSnapshot: check %v corruptions=%d %v", err, r.Corruptions, head(r.Messages, 4))
	}
	// The next allocation takes the first free cluster.
	writeAt(t, im, 512<<10, pattern(4096, 7))
	if err := im.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	if _, err := OpenDevice(memdev.FromBytes(d.Bytes(), memdev.Options{}), Options{}); err != nil {
		t.Errorf("image no longer opens: %v", err)
	}
}

// TestSnapshotOfEmptyL1: a 0-byte image has an empty L1 and no cluster
// for it, nor has a snapshot of it: there was one each, which Check
// (ours and qemu-img's) counted as leaks, and a repair of them freed a
// cluster DeleteSnapshot later freed again (found by review).
func TestSnapshotOfEmptyL1(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 0, ClusterSize: 4096}); err != nil {
		t.Skipf("create size 0: %v", err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	t.Logf("L1 size %d", im.Header().L1Size)
	if _, err := im.CreateSnapshot("s"); err != nil {
		t.Skipf("snapshot: %v", err)
	}
	r, err := im.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Leaks != 0 || r.Corruptions != 0 {
		t.Errorf("fresh snapshot of an empty image: leaks=%d corruptions=%d %v", r.Leaks, r.Corruptions, head(r.Messages, 3))
	}
	if _, err := im.Check(CheckOptions{Repair: RepairAll}); err != nil {
		t.Fatal(err)
	}
	if err := im.Truncate(1 << 20); err == nil {
		writeAt(t, im, 0, pattern(64<<10, 1))
	} else {
		t.Logf("truncate: %v", err)
	}
	if err := im.DeleteSnapshot("s"); err != nil {
		t.Logf("delete: %v", err)
	}
	r, err = im.Check(CheckOptions{})
	if err != nil || r.Corruptions != 0 {
		t.Errorf("after repair, growth, writes and delete: %v corruptions=%d %v", err, r.Corruptions, head(r.Messages, 3))
	}
}
