//go:build linux

package qcow2_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/uring/looptest"
)

// TestFullFS_FailedReserveKeepsSpaceUsable: on an ext4 running out of
// space, a reserve ahead (ZERO_RANGE) that fails part-way kept the
// blocks it got, past a gap of clusters it did not cover (the rounding
// of its start, the range being taken). The engine counted the kept
// part as reserved but allocates in order: the first cluster in the gap
// needed blocks the kept part held, its write failed with ENOSPC, and
// so did every allocating write after it, until Close gave the space
// back. With the same free space the engine without reserving ahead
// (prealloc-size=0, and qemu-img) stored 16 MiB of writes, with it 10.
// The reserve is an optimisation only: it must not cost the guest any
// space.
func TestFullFS_FailedReserveKeepsSpaceUsable(t *testing.T) {
	d := looptest.Ext4Dir(t, 64<<20)
	written := func(free int64, preallocSize int64) int64 {
		return writeUntilFull(t, d, free, 0, preallocSize)
	}
	for _, free := range []int64{9 << 20, 13600 << 10, 17 << 20} {
		t.Run(fmt.Sprintf("free=%dKiB", free>>10), func(t *testing.T) {
			without := written(free, -1)
			with := written(free, 0) // the default reserve ahead
			t.Logf("%d MiB written without a reserve ahead, %d MiB with", without>>20, with>>20)
			if with+1<<20 < without {
				t.Errorf("with %d KiB free: %d MiB of writes stored with the reserve ahead, %d MiB without: a failed reserve starved the writes", free>>10, with>>20, without>>20)
			}
		})
	}
}

// TestFullFS_ReserveLeavesNoHoles: the reserve ahead started at the
// high-water mark rounded up to prealloc-align (1 MiB), and past the
// range being taken: the clusters in between were left out of it, holes
// the file system had to find blocks for after the reserve had taken
// the last ones. Reopening an image whose file ends 4.3 MiB in and
// writing into a nearly full ext4 failed with ENOSPC at once where
// writing without a reserve (and qemu-img commit into such a base)
// succeeded.
func TestFullFS_ReserveLeavesNoHoles(t *testing.T) {
	d := looptest.Ext4Dir(t, 64<<20)
	for free := int64(0); free <= 2<<20; free += 256 << 10 {
		without := writeUntilFull(t, d, free, 4<<20+64<<10, -1)
		with := writeUntilFull(t, d, free, 4<<20+64<<10, 0)
		if with < without {
			t.Errorf("with %d KiB free: %d KiB of writes stored with the reserve ahead, %d KiB without", free>>10, with>>10, without>>10)
		}
	}
}

// writeUntilFull creates a 64 MiB image in dir with pre bytes written,
// leaves about free bytes free on dir's file system, reopens the image
// with preallocSize and writes 1 MiB pieces after pre until 48 MiB:
// it returns how many bytes the writes stored (the others must fail
// with ENOSPC), after checking the image with qemu-img.
func writeUntilFull(t *testing.T, d string, free, pre, preallocSize int64) (n int64) {
	t.Helper()
	p := filepath.Join(d, "img.qcow2")
	os.Remove(filepath.Join(d, "filler"))
	os.Remove(p)
	if err := qcow2.Create(p, qcow2.CreateOptions{Size: 64 << 20}); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	if pre > 0 {
		im, err := qcow2.Open(p, qcow2.Options{PreallocSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := im.WriteAt(bytes.Repeat([]byte{0x5a}, int(pre)), 0); err != nil {
			t.Fatal(err)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
	}
	looptest.FillFS(t, d, free)
	im, err := qcow2.Open(p, qcow2.Options{Opener: qcow2.Opener(uring.Opener(uring.Options{})), PreallocSize: preallocSize})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	var failed error
	for off := (pre + 1<<20 - 1) &^ (1<<20 - 1); off < 48<<20; off += int64(len(buf)) {
		for i := range buf {
			buf[i] = byte(off>>20) + 1
		}
		if _, err := im.WriteAt(buf, off); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("write at %d: %v, want ENOSPC", off, err)
			}
			failed = err
			continue
		}
		n += int64(len(buf))
	}
	if failed == nil {
		t.Fatalf("%d bytes free: the file system did not fill up", free)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(d, "filler"))
	testkit.QemuCheck(t, p)
	return n
}
