package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// LoopDevice returns a loop block device of size bytes, backed by a
// sparse file on a tmpfs of room bytes. With room < size it is a failing
// disk: writes past room bytes of data fail when the kernel writes them
// back, so a buffered write succeeds, the fdatasync after it fails with
// EIO, and the fdatasync after that succeeds with the data lost. It
// needs root, tmpfs and loop devices; without them t skips (fails in CI,
// Missing). The device and the mount go away at t's cleanup.
func LoopDevice(t testing.TB, size, room int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (tmpfs mount and a loop device)")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		Missing(t, "losetup not installed")
	}
	dir, err := os.MkdirTemp("", "qring-loop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", room), "tmpfs", dir).CombinedOutput(); err != nil {
		Missing(t, fmt.Sprintf("mount tmpfs: %v: %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	back := filepath.Join(dir, "back")
	f, err := os.Create(back)
	if err == nil {
		err = f.Truncate(size)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", back).CombinedOutput()
	if err != nil {
		Missing(t, fmt.Sprintf("losetup: %v: %s", err, out))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}
