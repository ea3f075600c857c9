package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestBackingOpenError_LikeQemu: an image whose backing file is missing,
// one level down or two, fails to open in qemu-img's words ("Could not
// open backing file: Could not open 'PATH': No such file or directory",
// once per level) and exit code. The engine said "qcow2: opening backing
// file ...: open PATH: no such file or directory".
func TestBackingOpenError_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	// Before the directory's images are checked at the end, which needs
	// their backing files (cleanups run last first).
	t.Cleanup(func() {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, "gone.qcow2"), "1M")
	})
	ov := filepath.Join(d, "ov.qcow2")
	ov2 := filepath.Join(d, "ov2.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", filepath.Join(d, "gone.qcow2"), "-F", "qcow2", ov, "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", "ov.qcow2", "-F", "qcow2", ov2, "1M")
	for _, img := range []string{ov, ov2} {
		for _, args := range [][]string{{"convert", "-O", "raw", img, filepath.Join(d, "out.raw")}, {"compare", img, img}, {"map", img}} {
			_, e, code := runQ(t, args...)
			_, qe, qcode := testkit.Run(t, "qemu-img", args...)
			if e = asQemu(e); code != qcode || e != qe {
				t.Errorf("%q: exit %d %q; qemu-img: exit %d %q", args, code, e, qcode, qe)
			}
		}
	}
}
