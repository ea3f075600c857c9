package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestDirtyOpen_RepairLinesLikeQemu: a command that opens an image left
// dirty by a crash (lazy refcounts) read-write repairs it first and, as
// qemu-img and qemu-io, prints the repair's lines on stderr ("ERROR
// cluster 5 refcount=0 reference=1", "Rebuilding refcount structure",
// "Repairing cluster ..."); qimg printed none. commit with a dirty base
// prints none, as qemu-img (it reopens the base without a repair).
func TestDirtyOpen_RepairLinesLikeQemu(t *testing.T) {
	d := qemuDir(t)
	t.Chdir(d)
	dirty := func(name string) {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", name, "4M")
		testkit.Run(t, "qemu-io", "-c", "write -P 5 0 1M", "-c", "abort", name) // a crash
	}
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "4M")
	for _, c := range []struct {
		ours, theirs []string // IMG stands for the image
	}{
		{[]string{"io", "-c", "write 1M 64k", "IMG"}, []string{"qemu-io", "-c", "write 1M 64k", "IMG"}},
		{[]string{"io", "--image-opts", "-c", "write 1M 64k", "driver=qcow2,file.filename=IMG"}, []string{"qemu-io", "--image-opts", "-c", "write 1M 64k", "driver=qcow2,file.filename=IMG"}},
		{[]string{"resize", "IMG", "8M"}, []string{"qemu-img", "resize", "IMG", "8M"}},
		{[]string{"snapshot", "-c", "s1", "IMG"}, []string{"qemu-img", "snapshot", "-c", "s1", "IMG"}},
		{[]string{"bitmap", "--add", "IMG", "b0"}, []string{"qemu-img", "bitmap", "--add", "IMG", "b0"}},
		{[]string{"amend", "-o", "lazy_refcounts=off", "IMG"}, []string{"qemu-img", "amend", "-o", "lazy_refcounts=off", "IMG"}},
		{[]string{"rebase", "-u", "-b", "", "IMG"}, []string{"qemu-img", "rebase", "-u", "-b", "", "IMG"}},
		{[]string{"convert", "-n", "-O", "qcow2", "src.qcow2", "IMG"}, []string{"qemu-img", "convert", "-n", "-O", "qcow2", "src.qcow2", "IMG"}},
	} {
		sub := func(args []string, img string) []string {
			out := make([]string, len(args))
			for i, a := range args {
				out[i] = strings.ReplaceAll(a, "IMG", img)
			}
			return out
		}
		dirty("q.qcow2")
		dirty("e.qcow2")
		_, oerr, code := runQ(t, sub(c.ours, "q.qcow2")...)
		theirs := sub(c.theirs, "e.qcow2")
		_, terr, qcode := testkit.Run(t, theirs[0], theirs[1:]...)
		if code != 0 || qcode != 0 || oerr != terr || !strings.Contains(oerr, "Rebuilding refcount structure") {
			t.Errorf("%q: exit %d, QEMU's %d\nours:\n%s\nQEMU's:\n%s", c.ours, code, qcode, oerr, terr)
		}
		testkit.QemuCheck(t, filepath.Join(d, "q.qcow2"))
	}
	// commit: a dirty top prints its lines, a dirty base none.
	for _, topDirty := range []bool{true, false} {
		for _, p := range []string{"q", "e"} {
			base, top := p+"b.qcow2", p+"t.qcow2"
			if topDirty {
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "-F", "qcow2", "-b", base, top)
				testkit.Run(t, "qemu-io", "-c", "write -P 5 0 1M", "-c", "abort", top)
			} else {
				dirty(base)
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, top)
			}
		}
		_, oerr, code := runQ(t, "commit", "qt.qcow2")
		_, terr, qcode := testkit.Run(t, "qemu-img", "commit", "et.qcow2")
		if code != qcode || oerr != terr || topDirty != strings.Contains(oerr, "Rebuilding") {
			t.Errorf("commit (top dirty %v): exit %d, qemu-img's %d\nours:\n%s\nqemu-img's:\n%s", topDirty, code, qcode, oerr, terr)
		}
		testkit.QemuCheck(t, filepath.Join(d, "qb.qcow2"))
	}
	// QEMU's commit left its dirty base dirty (refcounts stale until a
	// repair): repaired here for the directory's final check.
	testkit.Run(t, "qemu-img", "check", "-q", "-r", "all", "eb.qcow2")
}

// TestDirtyOpen_AllRepairLinesLikeQemu: a repair with more than 1000
// lines prints them all, as qemu-img (qimg's open kept the first 1000,
// and "Rebuilding refcount structure" with the rest).
func TestDirtyOpen_AllRepairLinesLikeQemu(t *testing.T) {
	d := qemuDir(t)
	t.Chdir(d)
	for _, name := range []string{"q.qcow2", "e.qcow2"} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", name, "128M")
		testkit.Run(t, "qemu-io", "-c", "write -P 5 0 66M", "-c", "abort", name) // 1056 clusters, a crash
	}
	_, oerr, code := runQ(t, "resize", "q.qcow2", "+1M")
	_, terr, qcode := testkit.Run(t, "qemu-img", "resize", "e.qcow2", "+1M")
	if n := strings.Count(terr, "ERROR cluster"); n <= 1000 {
		t.Fatalf("qemu-img printed %d ERROR lines: the test needs more than 1000", n)
	}
	if code != 0 || qcode != 0 || oerr != terr {
		t.Errorf("exit %d, qemu-img's %d; %d lines, qemu-img's %d\nours ends:\n%s\nqemu-img's ends:\n%s", code, qcode,
			strings.Count(oerr, "\n"), strings.Count(terr, "\n"), oerr[max(len(oerr)-300, 0):], terr[max(len(terr)-300, 0):])
	}
	testkit.QemuCheck(t, filepath.Join(d, "q.qcow2"))
}
