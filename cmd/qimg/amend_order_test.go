package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestAmend_DowngradeChecksLikeQemu: amend -o compat=0.10 with
// lazy_refcounts and refcount_bits refuses what qemu-img refuses, with
// its message, and amends what it amends. qemu-img checks the refcount
// width before lazy refcounts, and refuses lazy_refcounts=on with
// compat=0.10 only where it would turn them on: on an image that has
// them already, compat=0.10,lazy_refcounts=on downgrades it (qimg
// refused that, and put the lazy refcounts error first; both found by
// TestDifferential_MatchesQemu).
func TestAmend_DowngradeChecksLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	n := 0
	for _, lazy := range []string{"off", "on"} {
		for _, rb := range []int{4, 16} {
			tmpl := filepath.Join(dir, fmt.Sprintf("lazy-%s-%d.qcow2", lazy, rb))
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o",
				fmt.Sprintf("refcount_bits=%d,lazy_refcounts=%s", rb, lazy), tmpl, "1M")
			for _, o := range []string{
				"compat=0.10,lazy_refcounts=on",
				"compat=0.10,refcount_bits=8,lazy_refcounts=on",
				"compat=0.10,refcount_bits=16,lazy_refcounts=on",
			} {
				n++
				var paths [2]string
				for k := range paths {
					paths[k] = filepath.Join(dir, fmt.Sprintf("i%d-%d.qcow2", n, k))
					cp(t, tmpl, paths[k])
				}
				o1, e1, c1 := runQ(t, "amend", "-o", o, paths[0])
				o2, e2, c2 := testkit.Run(t, "qemu-img", "amend", "-o", o, paths[1])
				e1, e2 = diffStderr(e1, dir, "qimg: amend: "), diffStderr(e2, dir, "qemu-img: ")
				if o1 != o2 || c1 != c2 || e1 != e2 {
					t.Errorf("lazy %s, refcount_bits %d, amend -o %s: qimg exit %d %q %q; qemu-img exit %d %q %q", lazy, rb, o, c1, o1, e1, c2, o2, e2)
				}
				if c2 != 0 {
					continue
				}
				if i1, i2 := diffInfo(t, paths[0], dir), diffInfo(t, paths[1], dir); i1 != diffReplaceName(i2, paths[1], paths[0]) {
					t.Errorf("lazy %s, refcount_bits %d, amend -o %s: qemu-img info of qimg's:\n%s\nof qemu-img's:\n%s", lazy, rb, o, i1, i2)
				}
				testkit.QemuCheck(t, paths[0])
			}
		}
	}
}

// diffReplaceName writes name b where a is in s.
func diffReplaceName(s, a, b string) string {
	return strings.ReplaceAll(s, filepath.Base(a), filepath.Base(b))
}
