package main

import (
	"github.com/qring/qring/internal/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConvert_SameFileRefused: convert onto its own input, under any name
// of the same inode, or onto a backing file of the input, fails with exit
// 1 and leaves the image as it was (qemu-img check and the data).
func TestConvert_SameFileRefused(t *testing.T) {
	d := qemuDir(t)
	base := qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "4M", "write -P 0x5a 0 64k")
	x := qemuOverlay(t, filepath.Join(d, "x.qcow2"), "base.qcow2", "qcow2", "write -P 0xa5 1M 64k")
	link := filepath.Join(d, "hard.qcow2")
	if err := os.Link(x, link); err != nil {
		t.Fatal(err)
	}
	sym := filepath.Join(d, "sym.qcow2")
	if err := os.Symlink("x.qcow2", sym); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(d, ".", "..", filepath.Base(d), "x.qcow2")
	for _, tc := range []struct{ name, out, want string }{
		{"same path", x, "is the input file"},
		{"other path", other, "is the input file"},
		{"hard link", link, "is the input file"},
		{"symlink", sym, "is the input file"},
		{"backing file", base, "is the backing file"},
	} {
		for _, ofmt := range []string{"qcow2", "raw"} {
			_, e, code := runQ(t, "convert", "-O", ofmt, x, tc.out)
			if code != 1 || !strings.Contains(e, tc.want) || !strings.Contains(e, "refusing to overwrite") {
				t.Errorf("%s -O %s: exit %d, stderr %q; want 1 and %q", tc.name, ofmt, code, e, tc.want)
			}
		}
	}
	testkit.MustRun(t, "qemu-img", "check", "-q", x)
	testkit.MustRun(t, "qemu-img", "check", "-q", base)
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0x5a 0 64k", "-c", "read -P 0xa5 1M 64k", "-c", "read -P 0 2M 64k", x)
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0x5a 0 64k", base)
	// A distinct output still works.
	mustQ(t, "convert", "-O", "qcow2", x, filepath.Join(d, "copy.qcow2"))
}
