package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/memdev"
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
	if err := os.WriteFile(p, bitmapsRefblockOnData(t), 0o644); err != nil {
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

// bitmapsRefblockOnData is an image qemu-img made with bitmap b0 and
// 64 KiB of 7s at 0 (in the bitmap), whose refcount table's second entry
// names the guest data cluster: a Check repairs it by a rebuild.
func bitmapsRefblockOnData(t *testing.T) []byte {
	t.Helper()
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
	return b
}

// TestCrash_RebuildLoadedBitmaps: a crash at any write or flush of
// that repair, the write after it and Close leaves the image damaged as
// it was or clean but for leaks (the bitmaps' clusters counted while
// their bit is set), the guest data intact; qemu-img check agrees on a
// sample.
func TestCrash_RebuildLoadedBitmaps(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	b := bitmapsRefblockOnData(t)
	before := checkMem(t, memdev.FromBytes(b, memdev.Options{}))
	if before.Corruptions == 0 {
		t.Fatalf("the damaged image checks clean: %+v", before)
	}
	mem := memdev.FromBytes(b, memdev.Options{})
	rng := rand.New(rand.NewPCG(80, 1))
	h := &hookDev{Dev: mem}
	var clones []*memdev.Dev
	h.before = func() {
		for range 4 {
			clones = append(clones, mem.CrashClone(rng, rng.Float64()))
		}
	}
	im, err := OpenDevice(h, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := im.Check(CheckOptions{Repair: RepairAll}); err != nil || !r.Clean() {
		t.Fatalf("-r all: %v %+v", err, r)
	}
	if _, err := im.WriteAt(bytes.Repeat([]byte{5}, 4096), 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	clones = append(clones, mem.CrashClone(rng, 0))
	if len(clones) < 20 {
		t.Fatalf("only %d crash points", len(clones))
	}
	want := bytes.Repeat([]byte{7}, 64<<10)
	dir := t.TempDir()
	for i, c := range clones {
		r := checkMem(t, memdev.FromBytes(c.Bytes(), memdev.Options{}))
		if r.CheckErrors != 0 || (r.Corruptions != 0 && (r.Corruptions != before.Corruptions || r.Leaks != before.Leaks)) {
			t.Fatalf("clone %d: %+v, want no corruption or the damage as it was (%d corruptions, %d leaks)",
				i, r, before.Corruptions, before.Leaks)
		}
		im, err := OpenDevice(memdev.FromBytes(c.Bytes(), memdev.Options{}), Options{ReadOnly: true})
		if err != nil {
			t.Fatalf("clone %d: %v", i, err)
		}
		got := make([]byte, len(want))
		_, err = im.ReadAt(got, 0)
		im.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("clone %d: guest data lost: %v", i, err)
		}
		if r.Corruptions == 0 && i%8 == 0 {
			f := filepath.Join(dir, fmt.Sprintf("c%d.qcow2", i))
			if err := os.WriteFile(f, c.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, _, code := testkit.Run(t, "qemu-img", "check", f); code != 0 && code != 3 {
				t.Errorf("clone %d: qemu-img check: exit %d\n%s", i, code, out)
			}
		}
	}
}
