package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestRebuild_LoadedBitmapsKept: a Check(RepairAll) on an image opened
// normally, its persistent bitmaps loaded and maintained, that has to
// rebuild the refcount structures keeps the bitmaps (it cleared their
// autoclear bit and dropped them: qemu-img then found the bitmaps
// inconsistent, and the re-check freed their clusters), and they go
// on recording writes: after Close qemu-img lists the bitmap as
// consistent, check finds nothing, and the bitmap has the write after
// the repair.
func TestRebuild_LoadedBitmapsKept(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
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
	if im.bitmaps.Load() == nil {
		t.Fatal("the bitmaps are not loaded")
	}
	r, err := im.Check(CheckOptions{Repair: RepairAll})
	if err != nil || r.Corruptions != 0 || r.Leaks != 0 {
		t.Fatalf("check: %+v %v", r, err)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{5}, 4096), 8<<20); err != nil {
		t.Errorf("write after the repair: %v", err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, p)
	var info struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps []struct {
					Name  string
					Flags []string
				}
			}
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(testkit.MustRun(t, "qemu-img", "info", "--output=json", p)), &info); err != nil {
		t.Fatal(err)
	}
	if bm := info.FormatSpecific.Data.Bitmaps; len(bm) != 1 || bm[0].Name != "b0" || len(bm[0].Flags) != 1 || bm[0].Flags[0] != "auto" {
		t.Errorf("qemu-img info's bitmaps: %+v", bm)
	}
	// The write after the repair is in the bitmap (and the one before
	// it, 0-64k, qemu-io's).
	im, err = Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	for _, off := range []int64{0, 8 << 20} {
		dirty, _, err := im.DirtyRun("b0", off, 4096)
		if err != nil || !dirty {
			t.Errorf("the bitmap at %d after the repair: dirty %v, %v", off, dirty, err)
		}
	}
}
