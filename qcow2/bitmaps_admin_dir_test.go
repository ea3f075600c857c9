package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

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
