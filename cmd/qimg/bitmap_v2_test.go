package main

import (
	"path/filepath"
	"regexp"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// qemuNodeInPersistent is the node name in QEMU's "Can't make bitmap
// 'b' persistent in '#block123'": a number of its own, not reproduced.
var qemuNodeInPersistent = regexp.MustCompile(` in '#block[0-9]+'`)

// TestBitmap_V2ImageLikeQemu: bitmap operations on a compat=0.10 image
// fail with qemu-img's messages: a version 2 image has no bitmaps, so
// every operation but --add finds none ("Dirty bitmap 'b1' not found"),
// and --add cannot make one persistent. qimg said "Cannot store dirty
// bitmaps in qcow2 v2 files" for all of them (found by
// TestDifferential_MatchesQemu).
func TestBitmap_V2ImageLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	img := qemuImage(t, filepath.Join(dir, "v2.qcow2"), "qcow2", "1M")
	testkit.MustRun(t, "qemu-img", "amend", "-o", "compat=0.10", img)
	for _, ops := range [][]string{{"--enable"}, {"--disable"}, {"--remove"}, {"--clear"}, {"--merge", "b2"}, {"--add"}, {"--add", "-g", "64k"}, {"--disable", "--add"}} {
		args := append(append([]string{"bitmap"}, ops...), img, "b1")
		o1, e1, c1 := runQ(t, args...)
		o2, e2, c2 := testkit.Run(t, "qemu-img", args...)
		e1 = diffStderr(e1, dir, "qimg: bitmap: ")
		e2 = diffStderr(qemuNodeInPersistent.ReplaceAllString(e2, ""), dir, "qemu-img: ")
		if o1 != o2 || c1 != c2 || e1 != e2 {
			t.Errorf("%q: qimg exit %d %q %q; qemu-img exit %d %q %q", args, c1, o1, e1, c2, o2, e2)
		}
	}
}
