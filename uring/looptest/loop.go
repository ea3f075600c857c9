// Package looptest makes loop block devices for tests: real devices,
// including failing ones, without device-mapper. It lives under uring
// because it talks to the kernel (ioctls on /dev/loop-control).
package looptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// LoopDevice returns a loop block device of size bytes, backed by a
// sparse file on a tmpfs of room bytes. With room < size it is a failing
// disk: writes past room bytes of data fail when the kernel writes them
// back, so a buffered write succeeds, the fdatasync after it fails with
// EIO, and the fdatasync after that succeeds with the data lost. It
// needs root, tmpfs and loop devices; without them t skips (fails in CI:
// CI=true, where .ci/run provides them).
//
// Nothing outlives the test process, even killed: the device is
// attached with auto-clear and held open by the fixture (the kernel
// detaches it at the last close), and the tmpfs is unmounted lazily as
// soon as the device holds its file. At t's cleanup the fixture lets go
// and waits for the detach; whatever else holds the device open must be
// closed by an earlier cleanup (t.Cleanup runs last-registered first).
func LoopDevice(t testing.TB, size, room int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (tmpfs mount and a loop device)")
	}
	dir, err := os.MkdirTemp("", "qring-loop-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(dir)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", room), "tmpfs", dir).CombinedOutput(); err != nil {
		missing(t, fmt.Sprintf("mount tmpfs: %v: %s", err, out))
	}
	defer unix.Unmount(dir, unix.MNT_DETACH) // the loop device keeps the file
	back, err := os.OpenFile(filepath.Join(dir, "back"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := back.Truncate(size); err != nil {
		back.Close()
		t.Fatal(err)
	}
	dev, lfd, err := attachLoop(back)
	if err != nil {
		back.Close()
		missing(t, fmt.Sprintf("loop device: %v", err))
	}
	loops.Store(dev, loopDev{fd: lfd, back: back})
	t.Cleanup(func() {
		loops.Delete(dev)
		back.Close()
		unix.Close(lfd) // the last close detaches it (auto-clear)
		waitDetached(t, dev)
	})
	return dev
}

// LoopFile returns a loop block device of size bytes over a sparse file
// in dir, with logical sectors of sectorSize bytes and direct I/O to the
// file (LO_FLAGS_DIRECT_IO, where the kernel takes it), so that large
// tests cost disk, not memory. The same rules as LoopDevice apply.
func LoopFile(t testing.TB, dir string, size int64, sectorSize uint32) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (a loop device)")
	}
	back, err := os.CreateTemp(dir, "loop-back-")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(back.Name()) // the device keeps it
	if err := back.Truncate(size); err != nil {
		back.Close()
		t.Fatal(err)
	}
	dev, lfd, err := attachLoopWith(back, sectorSize, unix.LO_FLAGS_DIRECT_IO)
	if err != nil {
		dev, lfd, err = attachLoopWith(back, sectorSize, 0)
	}
	if err != nil {
		back.Close()
		missing(t, fmt.Sprintf("loop device with %d-byte sectors: %v", sectorSize, err))
	}
	loops.Store(dev, loopDev{fd: lfd, back: back})
	t.Cleanup(func() {
		loops.Delete(dev)
		back.Close()
		unix.Close(lfd)
		waitDetached(t, dev)
	})
	return dev
}

// GrowLoopDevice resizes a LoopDevice to size bytes, as an LVM or loop
// resize grows a disk under a running program.
func GrowLoopDevice(t testing.TB, dev string, size int64) {
	t.Helper()
	v, ok := loops.Load(dev)
	if !ok {
		t.Fatalf("%s is no LoopDevice of this test", dev)
	}
	l := v.(loopDev)
	if err := l.back.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(l.fd), unix.LOOP_SET_CAPACITY, 0); e != 0 {
		t.Fatalf("LOOP_SET_CAPACITY %s: %v", dev, e)
	}
}

type loopDev struct {
	fd   int
	back *os.File
}

var loops sync.Map // device path -> loopDev

// attachLoop attaches back to a free loop device with auto-clear
// (LOOP_CONFIGURE) and returns the device's path and a descriptor that
// keeps it attached.
func attachLoop(back *os.File) (string, int, error) {
	return attachLoopWith(back, 0, 0)
}

// attachLoopWith is attachLoop with a logical sector size (0: the
// kernel's default, 512) and more flags.
func attachLoopWith(back *os.File, sectorSize, flags uint32) (string, int, error) {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, err
	}
	defer unix.Close(ctl)
	for tries := 0; ; tries++ {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return "", -1, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		if _, err := os.Stat(dev); os.IsNotExist(err) {
			unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n))))
		}
		fd, err := unix.Open(dev, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return "", -1, err
		}
		cfg := unix.LoopConfig{Fd: uint32(back.Fd()), Size: sectorSize}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | flags
		copy(cfg.Info.File_name[:], back.Name())
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if err == nil {
			return dev, fd, nil
		}
		unix.Close(fd)
		if err != unix.EBUSY || tries == 20 { // EBUSY: another test took it first
			return "", -1, fmt.Errorf("LOOP_CONFIGURE %s: %w", dev, err)
		}
	}
}

// waitDetached waits until the kernel has let go of dev's backing file.
func waitDetached(t testing.TB, dev string) {
	backing := filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(backing); os.IsNotExist(err) {
			return
		}
	}
	t.Errorf("%s still attached 5 s after the test let go: something holds it open", dev)
}

// missing skips t for a missing test dependency, or fails it in CI
// (CI=true), as internal/testkit does for the tools it needs; this
// package may not import testkit (it sits in the uring tree).
func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: .ci/run should have made this possible)", why)
	}
	t.Skip(why)
}
