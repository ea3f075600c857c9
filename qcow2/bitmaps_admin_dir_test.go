package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block/errordev"
	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/internal/testkit"
)

// TestBitmaps_AdminDirAsOnMedia: the directory an AddBitmap or a
// RemoveBitmap writes during the open names each maintained bitmap as
// the media hold it, IN_USE and with the table stored (Q22). It wrote
// b.e: the loaded bitmaps without IN_USE (a crash then left b0 valid
// for QEMU, missing the writes made since the open), and after a
// resize the new table size with the old table (qemu-img could not
// open a crash copy; a Check read past the table and a rebuild counted
// what it read there).
func TestBitmaps_AdminDirAsOnMedia(t *testing.T) {
	testkit.NeedQemu(t)
	for _, grow := range []bool{false, true} {
		p := filepath.Join(t.TempDir(), "a.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", p, "64M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b0")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b1")
		testkit.MustRun(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 0 64k", p)
		im, err := Open(p, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if grow {
			if err := im.Truncate(1 << 30); err != nil { // b0's table: 1 cluster to 8
				t.Fatal(err)
			}
		}
		if _, err := im.WriteAt(bytes.Repeat([]byte{5}, 4096), 8<<20); err != nil {
			t.Fatal(err)
		}
		if err := im.AddBitmap("n1", 65536, true); err != nil {
			t.Fatal(err)
		}
		if err := im.RemoveBitmap("b1"); err != nil {
			t.Fatal(err)
		}
		if err := im.Flush(); err != nil {
			t.Fatal(err)
		}
		// A crash now: b0 is IN_USE, and its entry names its table.
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		c := p + ".crash"
		if err := os.WriteFile(c, b, 0o644); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheck(t, c)
		ro, err := Open(c, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := ro.BitmapUsable("b0"); err == nil {
			t.Errorf("grow %v: a crash after AddBitmap left b0 valid, missing the write at 8M", grow)
		}
		ro.Close()
		// The Check counts what the media name, and its rebuild too.
		r, err := im.Check(CheckOptions{Repair: RepairAll})
		if err != nil || !r.Clean() {
			t.Fatalf("grow %v: check: %v %+v", grow, err, r)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheck(t, p)
		ro, err = Open(p, Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		dirty, _, err := ro.DirtyRun("b0", 8<<20, 4096)
		if err != nil || !dirty {
			t.Errorf("grow %v: b0 after Close: dirty %v, %v", grow, dirty, err)
		}
		ro.Close()
	}
}

// TestBitmaps_RemoveFailedThenClose: a RemoveBitmap whose directory
// write fails before the header names it (the image stays writable)
// leaves the directory entries' places as they were; it gave the kept
// bitmaps their places in the new directory, and the Close then wrote
// each later entry over the one before in the old directory: b0 named
// b1's table, b1 b2's, b2 its freed table (qemu-img check: refcount=0
// reference=1).
func TestBitmaps_RemoveFailedThenClose(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io")
	p := filepath.Join(t.TempDir(), "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4096", p, "b1")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "8192", p, "b2")
	base, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := int64(0); ; i++ {
		mem := memdev.FromBytes(base, memdev.Options{})
		dev := errordev.New(mem, nil, errordev.Options{})
		im, err := OpenDevice(dev, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteAt(bytes.Repeat([]byte{1}, 4096), 1<<20); err != nil {
			t.Fatal(err)
		}
		dev.SetInjector(errordev.OnIndex(i, errordev.ErrInjectedEIO))
		rerr := im.RemoveBitmap("b0")
		dev.SetInjector(nil)
		if dev.Injected() == 0 {
			im.Close()
			break
		}
		if rerr == nil || im.ReadOnly() {
			im.Close()
			continue
		}
		failed++
		if err := im.Close(); err != nil {
			t.Fatalf("op %d: close: %v", i, err)
		}
		q := filepath.Join(t.TempDir(), "r.qcow2")
		if err := os.WriteFile(q, mem.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := testkit.QemuCheckReport(q, testkit.QemuCheckResult.NoCorruption); err != nil {
			t.Fatalf("op %d (remove: %v): %v", i, rerr, err)
		}
		bms := rawBitmaps(t, mem.Bytes())
		if len(bms) != 3 {
			t.Fatalf("op %d: %d bitmaps after a failed remove", i, len(bms))
		}
		for k, b := range bms {
			if want := []uint64{65536, 4096, 8192}[k]; b.name != fmt.Sprintf("b%d", k) || b.gran != want || !b.valid() || !b.dirty(1<<20) {
				t.Errorf("op %d: bitmap %d: %s gran %d flags %#x dirty %v", i, k, b.name, b.gran, b.flags, b.dirty(1<<20))
			}
		}
	}
	if failed == 0 {
		t.Fatal("no RemoveBitmap failed with the image writable")
	}
}
