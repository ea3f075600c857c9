package main

import (
	"path/filepath"
	"testing"
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
