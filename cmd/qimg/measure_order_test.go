package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMeasure_OpensFirstLikeQemu: measure opens the image and loads its
// snapshot (-l) before it looks at the output format's options, as
// qemu-img's img_measure: an image that does not open, or a snapshot
// it does not have, is the error reported, not an -o option the output
// format refuses (qimg reported the option; found by
// TestDifferential_MatchesQemu). --size's number is read first.
func TestMeasure_OpensFirstLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	img := qemuImage(t, filepath.Join(dir, "a.qcow2"), "qcow2", "1M")
	missing := filepath.Join(dir, "nosuch.qcow2")
	for _, args := range [][]string{
		{"-O", "raw", "-o", "compat=0.10", missing},
		{"-O", "raw", "-l", "s1", "-o", "compat=0.10", img},
		{"-O", "qcow2", "-o", "foo=1", missing},
		{"-O", "qcow2", "-o", "cluster_size=3", "-l", "s1", img},
		{"-O", "foo", missing},
		{"--size", "1x", "-o", "foo=1", "-O", "qcow2"},
		{"-O", "qcow2", "-o", "cluster_size=3", img}, // the option, once the image opened
	} {
		args = append([]string{"measure"}, args...)
		o1, e1, c1 := runQ(t, args...)
		o2, e2, c2 := testkit.Run(t, "qemu-img", args...)
		e1, e2 = diffStderr(e1, dir, "qimg: measure: "), diffStderr(e2, dir, "qemu-img: ")
		if o1 != o2 || c1 != c2 || e1 != e2 {
			t.Errorf("%q: qimg exit %d %q %q; qemu-img exit %d %q %q", args, c1, o1, e1, c2, o2, e2)
		}
	}
}
