package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommit_BitmapsLikeQemu: commit updates the base's enabled bitmaps
// with the clusters it copies and leaves the emptied top's bitmaps as
// they were, as qemu-img's (the top's guest view does not change); qimg
// marked the top's bitmaps dirty over the whole disk, so the next
// incremental backup of it was a full one.
func TestCommit_BitmapsLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	d := t.TempDir()
	for _, tool := range []string{"qemu-img", "qimg"} {
		base, top := filepath.Join(d, tool+"-base.qcow2"), filepath.Join(d, tool+"-top.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", base, "bb")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", filepath.Base(base), "-F", "qcow2", top)
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", top, "tb")
		testkit.MustRun(t, "qemu-io", "-c", "write 1M 64k", top)
		if _, e, code := runImg(t, tool, "commit", top); code != 0 {
			t.Fatalf("%s commit: exit %d: %s", tool, code, e)
		}
		testkit.QemuCheck(t, base)
		testkit.QemuCheck(t, top)
	}
	for _, c := range []struct{ img, bitmap string }{{"-top.qcow2", "tb"}, {"-base.qcow2", "bb"}} {
		q := testkit.DirtyMap(t, filepath.Join(d, "qemu-img"+c.img), c.bitmap)
		if o := testkit.DirtyMap(t, filepath.Join(d, "qimg"+c.img), c.bitmap); o != q {
			t.Errorf("%s after commit:\n%s\nqemu-img's:\n%s", c.bitmap, o, q)
		}
	}
}
