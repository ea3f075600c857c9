package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// fullRun is one tool's run on a nearly full file system.
type fullRun struct {
	img, stderr string
	code        int
	size        int64 // the image file's size after the run
}

// nearlyFullImage mounts a small file system, a tmpfs or (ext4) a
// loop-mounted ext4, holding img.qcow2, a 1 GiB qcow2 image QEMU made
// with data in two L2 tables' ranges (an L1 table of two entries, in the
// file's last cluster), and fills it until free bytes are free (on ext4
// root has its reserved blocks too). It returns the mount point and the
// image's path.
func nearlyFullImage(t *testing.T, ext4 bool, free int64) (dir, img string) {
	t.Helper()
	if ext4 {
		if os.Geteuid() != 0 {
			t.Skip("needs root (loop mount)")
		}
		dir = looptest.Ext4Dir(t, 32<<20)
	} else {
		dir = looptest.SmallTmpfs(t, 8<<20)
	}
	img = filepath.Join(dir, "img.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1G")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 512M 64k", img)
	looptest.FillFS(t, dir, free)
	return dir, img
}

// runNearlyFull runs args with qemu-img and with qimg, each on its own
// nearlyFullImage (on ext4 or a tmpfs) with free bytes free; in args, IMG stands for the
// image and DIR for the mount point. The stderrs are returned without
// the tools' prefixes ("qemu-img: ", "qimg: COMMAND: ") and with the
// paths as DIR.
func runNearlyFull(t *testing.T, ext4 bool, free int64, args ...string) (theirs, ours fullRun) {
	t.Helper()
	one := func(tool string) fullRun {
		dir, img := nearlyFullImage(t, ext4, free)
		a := make([]string, len(args))
		for i, s := range args {
			a[i] = strings.ReplaceAll(strings.ReplaceAll(s, "IMG", img), "DIR", dir)
		}
		var r fullRun
		r.img = img
		if tool == "qemu-img" {
			_, r.stderr, r.code = testkit.Run(t, "qemu-img", a...)
			r.stderr = strings.ReplaceAll(r.stderr, "qemu-img: ", "")
		} else {
			_, r.stderr, r.code = runQ(t, a...)
			r.stderr = strings.ReplaceAll(r.stderr, "qimg: "+a[0]+": ", "")
		}
		r.stderr = strings.ReplaceAll(strings.TrimSpace(r.stderr), dir, "DIR")
		if st, err := os.Stat(img); err == nil {
			r.size = st.Size()
		}
		return r
	}
	return one("qemu-img"), one("qimg")
}

// testRoomLikeQemu runs args on nearly full file systems (tmpfs and
// ext4) where qemu-img succeeds, and wants qimg to succeed too, leaving a
// clean image of the size QEMU's has (the same bytes written: a new
// table's, not its clusters'; on ext4 no reserve ahead either, whose
// reservation failing part-way kept the last blocks).
func testRoomLikeQemu(t *testing.T, frees []int64, args ...string) {
	testkit.NeedQemu(t)
	for _, ext4 := range []bool{false, true} {
		for _, free := range frees {
			roomLikeQemu(t, ext4, free, args...)
		}
	}
}

// roomLikeQemu is testRoomLikeQemu's run on one file system.
func roomLikeQemu(t *testing.T, ext4 bool, free int64, args ...string) {
	t.Helper()
	theirs, ours := runNearlyFull(t, ext4, free, args...)
	if theirs.code != 0 {
		t.Logf("ext4 %v, %d bytes free: qemu-img %q failed (exit %d: %s); not compared", ext4, free, args, theirs.code, theirs.stderr)
		return
	}
	if ours.code != 0 {
		t.Errorf("ext4 %v, %d bytes free: qimg %q: exit %d: %s (qemu-img %[3]q succeeded)", ext4, free, args, ours.code, ours.stderr)
		return
	}
	testkit.QemuCheck(t, theirs.img)
	testkit.QemuCheck(t, ours.img)
	if ours.size != theirs.size {
		t.Errorf("ext4 %v, %d bytes free: qimg %q left a file of %d bytes, qemu-img %d", ext4, free, args, ours.size, theirs.size)
	}
}

// TestSnapshot_CreateNearlyFullLikeQemu: qemu-img snapshot -c writes the
// new L1 copy's entries and the snapshot table's bytes into the clusters
// it allocates for them; qimg wrote both tables' clusters in full and
// failed with ENOSPC on a file system with up to two clusters too little
// room (64 KiB free: "write [0x90000, +0x10000): no space left on
// device").
func TestSnapshot_CreateNearlyFullLikeQemu(t *testing.T) {
	testRoomLikeQemu(t, []int64{8 << 10, 16 << 10, 64 << 10}, "snapshot", "-c", "s1", "IMG")
}

// TestBitmap_AddNearlyFullLikeQemu: the same for qemu-img bitmap --add:
// the new bitmap's table and the bitmap directory are their bytes only
// (8 and 32 here), not two clusters of zeros.
func TestBitmap_AddNearlyFullLikeQemu(t *testing.T) {
	testRoomLikeQemu(t, []int64{8 << 10, 16 << 10, 64 << 10}, "bitmap", "--add", "IMG", "b1")
}

// TestResize_GrowL1NearlyFullLikeQemu: a resize that grows the L1 table
// (two entries to 200) writes the new table's 1600 bytes, as QEMU's
// qcow2_grow_l1_table, not its cluster.
func TestResize_GrowL1NearlyFullLikeQemu(t *testing.T) {
	testRoomLikeQemu(t, []int64{4 << 10, 16 << 10, 32 << 10}, "resize", "IMG", "100G")
}

// TestNoSpace_MessagesLikeQemu: where qemu-img fails for want of space,
// qimg fails with its exit code and its words (after the tools'
// prefixes): the step that failed and the errno in strerror's words,
// where qimg printed the device request ("write [0x0, +0x30200): no
// space left on device"). create, convert and dd fail writing the new
// image's header, its refcount table or its L1 table as qemu-img does
// (free 0, 100 KiB, 192 KiB: one cluster, the next two, the table),
// resize growing the L1 table, snapshot -c with qemu-img's "-28 (...)".
// The image each run starts from stays clean.
func TestNoSpace_MessagesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range []struct {
		free int64
		args []string
	}{
		{0, []string{"create", "-q", "-f", "qcow2", "DIR/new.qcow2", "1G"}},
		{100 << 10, []string{"create", "-q", "-f", "qcow2", "DIR/new.qcow2", "1G"}},
		{192 << 10, []string{"create", "-q", "-f", "qcow2", "DIR/new.qcow2", "1G"}},
		{0, []string{"convert", "-O", "qcow2", "IMG", "DIR/out.qcow2"}},
		{100 << 10, []string{"convert", "-O", "qcow2", "IMG", "DIR/out.qcow2"}},
		{0, []string{"dd", "-O", "qcow2", "if=IMG", "of=DIR/out.qcow2"}},
		{0, []string{"resize", "IMG", "100G"}},
		{0, []string{"snapshot", "-c", "s1", "IMG"}},
		{0, []string{"amend", "-o", "refcount_bits=64", "IMG"}},
		{0, []string{"amend", "-o", "refcount_bits=1", "IMG"}},
	} {
		theirs, ours := runNearlyFull(t, false, c.free, c.args...)
		if theirs.code == 0 {
			t.Errorf("%d bytes free: qemu-img %q succeeded: the case no longer fails", c.free, c.args)
			continue
		}
		if ours.code != theirs.code || ours.stderr != theirs.stderr {
			t.Errorf("%d bytes free: %q:\nqimg:     exit %d %q\nqemu-img: exit %d %q", c.free, c.args, ours.code, ours.stderr, theirs.code, theirs.stderr)
		}
		testkit.QemuCheck(t, theirs.img)
		testkit.QemuCheck(t, ours.img)
	}
}
