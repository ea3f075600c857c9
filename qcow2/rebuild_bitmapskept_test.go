package qcow2

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestRebuild_AutoclearWithoutBitmapsKeepsWrites: a Check's rebuild keeps
// the bitmaps nothing loaded (bitmapsKept, guest writes refused until a
// reopen) only when there are bitmaps to keep: an image whose header has
// the bitmaps' autoclear bit but no bitmaps extension, opened writable,
// stayed writable before that rule and must after it (the second review
// found every write refused after the repair).
func TestRebuild_AutoclearWithoutBitmapsKeepsWrites(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	be.PutUint64(b[88:], 1) // autoclear: bitmaps, with no extension
	rt := be.Uint64(b[48:])
	l2 := be.Uint64(b[be.Uint64(b[40:]):]) & 0x00fffffffffffe00
	data := be.Uint64(b[l2:]) & 0x00fffffffffffe00
	be.PutUint64(b[rt+8:], data) // refcount block 1 is guest data: a rebuild
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := im.Check(CheckOptions{Repair: RepairAll}); err != nil {
		t.Fatal(err)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{5}, 4096), 8<<20); err != nil {
		t.Errorf("write after the repair: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)
	if out := testkit.MustRun(t, "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 7 0 64k", "-c", "read -P 5 8M 4k", p); bytes.Contains([]byte(out), []byte("verification failed")) {
		t.Error(out)
	}
}
