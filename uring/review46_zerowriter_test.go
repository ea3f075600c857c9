//go:build linux

package uring

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// TestReview46_ZeroWriterFailedZeroingWrites: once an Allocate zeroing
// succeeded on a File, ZeroThenWritev is one linked submission (U4), and
// the kernel runs the write after a failed IORING_OP_FALLOCATE. Here the
// fallocate fails with ENOSPC on a full ext4 while the write, into blocks
// already allocated, lands. block.ZeroWriter allows that (the write's
// range holds old or new bytes after a failed call, as after any failed
// write; review 46 found the doc promising the write was not performed);
// the call must report the zeroing's error, and the range must hold the
// old bytes or the new ones. The engine (qcow2 zeroThenWrite) writes so
// only into a cluster it links after success.
func TestReview46_ZeroWriterFailedZeroingWrites(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 not installed")
	}
	dev := looptest.LoopFile(t, t.TempDir(), 32<<20, 4096)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Skipf("mkfs.ext4: %v: %s", err, out)
	}
	dir, err := os.MkdirTemp("", "qring-ext4-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		os.Remove(dir)
		t.Skipf("mount ext4: %v", err)
	}
	t.Cleanup(func() {
		unix.Unmount(dir, 0)
		os.Remove(dir)
	})
	f, err := Open(filepath.Join(dir, "img"), Options{Backend: Ring, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const c = 64 << 10
	if err := f.WriteZeroes(0, 2*c, block.Allocate); err != nil {
		t.Fatalf("first Allocate zeroing: %v", err)
	}
	old := pattern(70, c)
	if err := block.WriteAt(f, old, c); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(); err != nil {
		t.Fatal(err)
	}
	// Fill the file system.
	fill, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for n := int64(64 << 20); n >= 4096; n /= 2 {
		st, _ := fill.Stat()
		unix.Fallocate(int(fill.Fd()), 0, st.Size(), n)
	}
	fill.Close()
	data := pattern(71, c)
	err = f.ZeroThenWritev(8*c, 64*c, block.Allocate, c, [][]byte{data})
	if !errors.Is(err, unix.ENOSPC) {
		t.Skipf("the zeroing did not fail with ENOSPC: %v", err)
	}
	if got := readAll(t, f, c, c); !bytes.Equal(got, old) && !bytes.Equal(got, data) {
		t.Fatalf("after ZeroThenWritev failed its zeroing (%v), the write's range holds neither the old bytes nor the new", err)
	}
}
