package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCheckFragmentationMatchesQemu: check's allocated, fragmented and
// compressed cluster counts are qemu-img's: contiguity is judged within
// one L2 table, and a compressed cluster does not reset it.
func TestCheckFragmentationMatchesQemu(t *testing.T) {
	dir := qemuDir(t)
	imgs := []string{
		qemuImage(t, filepath.Join(dir, "two-tables.qcow2"), "qcow2", "2G", "write 0 64k", "write 1G 64k"),
		qemuImage(t, filepath.Join(dir, "compressed-between.qcow2"), "qcow2", "64M", "write 0 64k", "write -c 64k 64k", "write 128k 64k"),
	}
	for _, p := range imgs {
		ours, theirs := qimgAndQemu(t, "check", p)
		if ours != theirs {
			t.Errorf("check %s:\nqimg:\n%s\nqemu-img:\n%s", filepath.Base(p), ours, theirs)
		}
	}
}

// TestSmallDifferencesFromQemu: exit codes and messages where qimg
// differed from qemu-img: compare's usage errors exit 1, its size
// warning comes only once the common part matched, and listing the
// snapshots of a raw image lists none and succeeds.
func TestSmallDifferencesFromQemu(t *testing.T) {
	dir := qemuDir(t)
	small := qemuImage(t, filepath.Join(dir, "small.qcow2"), "qcow2", "4M")
	big := qemuImage(t, filepath.Join(dir, "big.qcow2"), "qcow2", "8M", "write -P 1 0 4k")
	raw := qemuImage(t, filepath.Join(dir, "r.raw"), "raw", "1M")
	for _, args := range [][]string{{"compare", small, big}, {"compare", small}, {"snapshot", "-l", raw}} {
		ours, _, code := runQ(t, args...)
		theirs, _, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode || ours != theirs {
			t.Errorf("%q: qimg exit %d, stdout %q; qemu-img exit %d, stdout %q", args, code, ours, qcode, theirs)
		}
	}
}
