package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommit_EmptiedTopLeaksNothingLikeQemu: a commit of a version 3
// image without snapshots or bitmaps leaves it completely empty, as
// qemu-img's does (make_completely_empty rebuilds its refcounts): a
// cluster the image leaked before is not leaked after. qimg's left it
// counted (qemu-img check: 1 leaked cluster); found by
// TestDifferential_MatchesQemu.
func TestCommit_EmptiedTopLeaksNothingLikeQemu(t *testing.T) {
	dir, qdir := qemuDir(t), workDir(t)
	base := qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "4M", "write -P 1 0 1M")
	top := qemuOverlay(t, filepath.Join(dir, "top.qcow2"), "base.qcow2", "qcow2", "write -P 2 512k 1M")
	if !injectLeak(t, top) {
		t.Fatal("no refcount block covers the cluster after the file's end")
	}
	if r, err := testkit.QemuImgCheck(top); err != nil || r.Leaks != 1 {
		t.Fatalf("the leak injected: %v %v", r, err)
	}
	qbase, qtop := filepath.Join(qdir, "base.qcow2"), filepath.Join(qdir, "top.qcow2")
	cp(t, base, qbase)
	cp(t, top, qtop)
	mustQ(t, "commit", top)
	testkit.MustRun(t, "qemu-img", "commit", "-q", qtop)
	// Both tops and bases are checked clean at the end (workDir).
	testkit.MustRun(t, "qemu-img", "compare", base, qbase)
	testkit.MustRun(t, "qemu-img", "compare", top, qtop)
}
