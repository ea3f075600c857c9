package testkit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// LoopDevice returns a loop block device of size bytes, backed by a
// sparse file on a tmpfs of room bytes. With room < size it is a failing
// disk: writes past room bytes of data fail when the kernel writes them
// back, so a buffered write succeeds, the fdatasync after it fails with
// EIO, and the fdatasync after that succeeds with the data lost. It
// needs root, tmpfs and loop devices; without them t skips (fails in CI,
// Missing). At t's cleanup the device is detached and the tmpfs
// unmounted; whatever still holds the device open must be closed by an
// earlier cleanup (t.Cleanup runs last-registered first).
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
	t.Cleanup(func() { unmount(t, dir) })
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
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detach(t, dev, st.Rdev) })
	return dev
}

// detach detaches the loop device dev (device number rdev), making its
// node again first if something removed it, and waits until the kernel
// has let go of the backing file (a detach while the device is open
// only happens at its last close).
func detach(t testing.TB, dev string, rdev uint64) {
	if _, err := os.Stat(dev); os.IsNotExist(err) {
		if err := syscall.Mknod(dev, syscall.S_IFBLK|0o660, int(rdev)); err != nil {
			t.Errorf("loop device %s was removed and cannot be made again: %v", dev, err)
			return
		}
	}
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		return
	}
	backing := filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(backing); os.IsNotExist(err) {
			return
		}
	}
	t.Errorf("%s still attached 5 s after losetup -d: something holds it open", dev)
}

// unmount unmounts dir, lazily if it is still busy.
func unmount(t testing.TB, dir string) {
	if err := exec.Command("umount", dir).Run(); err == nil {
		return
	}
	if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
		t.Errorf("umount -l %s: %v: %s", dir, err, out)
	}
}
