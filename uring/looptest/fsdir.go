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
	return fsDir(t, "xfs", size, "-q", "-f")
}

// Ext4Dir is XFSDir with ext4: for tests of what ext4 does (a file
// cannot pass 16 TiB with 4 KiB blocks: EFBIG).
func Ext4Dir(t testing.TB, size int64) string {
	t.Helper()
	return fsDir(t, "ext4", size, "-q", "-F")
}

// fsDir makes a file system of type fs (mkfs.fs with mkfsArgs) on a new
// LoopFile of size bytes and mounts it until t's cleanup.
func fsDir(t testing.TB, fs string, size int64, mkfsArgs ...string) string {
	t.Helper()
	mkfs := "mkfs." + fs
	if _, err := exec.LookPath(mkfs); err != nil {
		missing(t, mkfs+" not installed")
	}
	dev := LoopFile(t, t.TempDir(), size, 512)
	if out, err := exec.Command(mkfs, append(mkfsArgs, dev)...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", mkfs, dev, err, out)
	}
	dir, err := os.MkdirTemp("", "qring-"+fs+"-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, fs, 0, ""); err != nil {
		os.Remove(dir)
		missing(t, fmt.Sprintf("mount %s: %v", fs, err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	return dir
}
