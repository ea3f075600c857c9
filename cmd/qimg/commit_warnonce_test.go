package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommit_WarnsOnceLikeQemu: the warning an image's open prints (a
// version 2 image with bitmaps, which a downgrade left) comes once from
// commit, as from qemu-img's, which opens the image once. qimg printed
// it again when it reopened the image to empty it (found by
// TestDifferential_MatchesQemu).
func TestCommit_WarnsOnceLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	var stderr [2]string
	for k := range stderr {
		dir := testkit.Dir(t) // the bitmaps' clusters are leaked, as the warning says
		qemuImage(t, filepath.Join(dir, "base.raw"), "raw", "1M")
		top := qemuOverlay(t, filepath.Join(dir, "top.qcow2"), "base.raw", "raw", "write -P 1 0 64k")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", top, "b1")
		testkit.MustRun(t, "qemu-img", "amend", "-o", "compat=0.10", top)
		var out string
		var code int
		if k == 0 {
			out, stderr[k], code = runQ(t, "commit", top)
			stderr[k] = strings.ReplaceAll(stderr[k], "qimg: ", "qemu-img: ")
		} else {
			out, stderr[k], code = testkit.Run(t, "qemu-img", "commit", top)
		}
		if code != 0 || out != "Image committed.\n" {
			t.Fatalf("commit (%d): exit %d, %q %q", k, code, out, stderr[k])
		}
	}
	// qemu-img ends its hint without a new line (error_printf), qimg
	// with one.
	if strings.TrimSuffix(stderr[0], "\n") != stderr[1] {
		t.Errorf("stderr:\nqimg:\n%s\nqemu-img:\n%s", stderr[0], stderr[1])
	}
}
