package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// leaveInUse leaves the bitmaps of image p IN_USE, as a writer that did
// not close leaves them: the file as it is while the engine holds it
// open.
func leaveInUse(t *testing.T, p string) {
	t.Helper()
	im, err := qcow2.Open(p, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw := mustReadFile(t, p)
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

// qimg bitmap on an image whose bitmaps are all inconsistent: what
// needs the bits is refused with qemu-img's message and hint, --remove
// and --add work (before, qimg refused them all: "not maintained").
func TestBitmap_InconsistentLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	base := filepath.Join(dir, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", base, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", base, "b1")
	leaveInUse(t, base)
	for _, op := range [][]string{
		{"--enable"}, {"--disable"}, {"--clear"}, {"--merge", "b1"},
		{"--remove"}, {"--add", "-g", "64k"},
	} {
		var files []string
		for _, who := range []string{"ours", "theirs"} {
			p := filepath.Join(dir, who+".qcow2")
			if err := os.WriteFile(p, mustReadFile(t, base), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		}
		name := "b0"
		if op[0] == "--add" {
			name = "b2"
		}
		args := append([]string{"bitmap"}, op...)
		o, e, code := runQ(t, append(args, files[0], name)...)
		q, qe, qcode := testkit.Run(t, "qemu-img", append(args, files[1], name)...)
		if o != q || ourMessage(e) != qemuMessage(qe) || code != qcode {
			t.Errorf("%v: qimg exit %d %q %q; qemu-img exit %d %q %q", op, code, o, e, qcode, q, qe)
		}
		a := testkit.MustRun(t, "qemu-img", "info", "--output=json", files[0])
		b := testkit.MustRun(t, "qemu-img", "info", "--output=json", files[1])
		if bitmapsOf(a) != bitmapsOf(b) {
			t.Errorf("%v: qimg's bitmaps %s, qemu-img's %s", op, bitmapsOf(a), bitmapsOf(b))
		}
		testkit.QemuCheck(t, files[0])
	}
}
