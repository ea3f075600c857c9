package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestBitmap_MergeLookupOrderLikeQemu: bitmap --merge looks up the
// target, then the source, before it finds either inconsistent, as
// qemu-img does: merging a source that does not exist into an
// inconsistent target (in use: a crash left it so) fails with "Dirty
// bitmap 'SRC' not found". qimg reported the target inconsistent
// (found by TestDifferential_MatchesQemu). An inconsistent target
// still comes before an inconsistent source.
func TestBitmap_MergeLookupOrderLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	img := qemuImage(t, filepath.Join(dir, "a.qcow2"), "qcow2", "1M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", img, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "--disable", img, "b1")
	// A crash after a write: the enabled bitmaps stay in use.
	testkit.Run(t, "qemu-io", "-c", "write 0 64k", "-c", "sigraise 9", img)
	good := filepath.Join(dir, "good.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", good, "1M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", good, "g")
	for _, args := range [][]string{
		{"--merge", "b2", img, "b0"}, // the source missing, the target inconsistent
		{"--merge", "b0", img, "b3"}, // the target missing
		{"--merge", "b0", img, "b1"}, // the source inconsistent
		{"--merge", "b1", img, "b0"}, // the target inconsistent
		{"--merge", "b2", good, "g"}, // the source missing
		{"--merge", "g", "-b", good, img, "b0"},
		{"--merge", "nosuch", "-b", good, img, "b0"},
	} {
		args = append([]string{"bitmap"}, args...)
		o1, e1, c1 := runQ(t, args...)
		o2, e2, c2 := testkit.Run(t, "qemu-img", args...)
		e1, e2 = diffStderr(e1, dir, "qimg: bitmap: "), diffStderr(e2, dir, "qemu-img: ")
		if o1 != o2 || c1 != c2 || e1 != e2 {
			t.Errorf("%q: qimg exit %d %q %q; qemu-img exit %d %q %q", args, c1, o1, e1, c2, o2, e2)
		}
	}
}
