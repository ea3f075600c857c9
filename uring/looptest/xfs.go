package looptest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// XFSDir mounts a new XFS of size bytes (on a LoopFile in a temporary
// directory) and returns its mount point, unmounted at t's cleanup:
// for tests of what only XFS does (extent size hints). Without root,
// mkfs.xfs or a loop device t skips (fails in CI: CI=true).
func XFSDir(t testing.TB, size int64) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		missing(t, "mkfs.xfs not installed")
	}
	dev := LoopFile(t, t.TempDir(), size, 512)
	if out, err := exec.Command("mkfs.xfs", "-q", "-f", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs %s: %v: %s", dev, err, out)
	}
	dir, err := os.MkdirTemp("", "qring-xfs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, "xfs", 0, ""); err != nil {
		os.Remove(dir)
		missing(t, fmt.Sprintf("mount xfs: %v", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	return dir
}
