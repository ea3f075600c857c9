package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvertSparseZeroFullyAllocates: convert -S 0 writes every byte,
// zeros too, so the output is fully allocated, as qemu-img ("Select 0
// to disable sparse detection (fully allocates output)"); an -S that is
// not whole sectors is refused with qemu-img's message.
func TestConvertSparseZeroFullyAllocates(t *testing.T) {
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "s.qcow2"), "qcow2", "8M", "write -P 3 1M 64k")
	for _, ofmt := range []string{"qcow2", "raw"} {
		ours, theirs := filepath.Join(dir, "ours."+ofmt), filepath.Join(dir, "theirs."+ofmt)
		mustQ(t, "convert", "-S", "0", "-O", ofmt, src, ours)
		testkit.MustRun(t, "qemu-img", "convert", "-S", "0", "-O", ofmt, src, theirs)
		a := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", ofmt, ours)
		b := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", ofmt, theirs)
		if a != b {
			t.Errorf("-S 0 -O %s: qemu-img map of ours:\n%s\nof qemu-img's:\n%s", ofmt, a, b)
		}
	}
	_, ours, code := runQ(t, "convert", "-S", "1000", "-O", "raw", src, filepath.Join(dir, "x.raw"))
	_, theirs, qcode := testkit.Run(t, "qemu-img", "convert", "-S", "1000", "-O", "raw", src, filepath.Join(dir, "y.raw"))
	if code != qcode || !strings.Contains(ours, "Invalid buffer size for sparse output") {
		t.Errorf("-S 1000: exit %d (%s), qemu-img %d (%s)", code, ours, qcode, theirs)
	}
}
