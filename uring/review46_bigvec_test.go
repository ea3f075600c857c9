//go:build linux

package uring

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// bigEnv gates the review's tests that move more than 2 GiB: they cost
// seconds to minutes of disk I/O, so they run only with
// QRING_BIG_VECTORS=1 (as TestBlockDeviceBigVector), never in make test.
func bigEnv(t *testing.T) {
	t.Helper()
	if os.Getenv("QRING_BIG_VECTORS") != "1" || testing.Short() {
		t.Skip("QRING_BIG_VECTORS=1 runs it (moves more than 2 GiB)")
	}
}

// xfsLargeSector mounts a fresh XFS with sector and block size sector on a
// loop device over a sparse file of size bytes, and returns the mount
// point. It skips without root, mkfs.xfs or a kernel that takes the
// sizes.
func xfsLargeSector(t *testing.T, size int64, sector uint32) string {
	t.Helper()
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Skip("mkfs.xfs not installed")
	}
	dev := looptest.LoopFile(t, t.TempDir(), size, sector)
	s := strconv.Itoa(int(sector))
	if out, err := exec.Command("mkfs.xfs", "-q", "-f", "-b", "size="+s, "-s", "size="+s, dev).CombinedOutput(); err != nil {
		t.Skipf("mkfs.xfs with %d-byte sectors: %v: %s", sector, err, out)
	}
	dir, err := os.MkdirTemp("", "qring-xfs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, "xfs", 0, ""); err != nil {
		os.Remove(dir)
		t.Skipf("mount xfs with %d-byte blocks: %v", sector, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	return dir
}

// TestReview46_LinkedBigVectorLargeSector (U4, R6): ZeroThenWritev with
// Allocate on an O_DIRECT file whose sectors are larger than 4 KiB, with a
// vector of several buffers totalling more than 2 GiB. The kernel moves
// at most MAX_RW_COUNT (2 GiB - 4 KiB) a call, which is no whole sector
// there, so a write of the whole vector in one SQE fails with EINVAL
// (R6): the linked submission must take only what chunked would send
// in one call. The vector repeats one 64 MiB buffer, so it costs 64 MiB
// of memory and 2.1 GiB of disk I/O.
func TestReview46_LinkedBigVectorLargeSector(t *testing.T) {
	bigEnv(t)
	const sector = 8192
	const bufLen, nBufs = 64 << 20, 34 // 2176 MiB
	dir := xfsLargeSector(t, nBufs*bufLen+256<<20, sector)
	f, err := Open(filepath.Join(dir, "img"), Options{Backend: Ring, Direct: true, Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if a := f.Caps().Align; a != sector {
		t.Skipf("Align %d on an XFS with %d-byte sectors", a, sector)
	}
	za := f.Caps().ZeroAlign
	// An Allocate zeroing first: the linked submission is used only
	// once one succeeded on the File (U4).
	if err := f.WriteZeroes(0, za, block.Allocate); err != nil {
		t.Fatalf("first Allocate zeroing: %v", err)
	}
	buf := pattern(46, bufLen)
	bufs := make([][]byte, nBufs)
	for i := range bufs {
		bufs[i] = buf
	}
	const woff = 1 << 20
	if err := f.ZeroThenWritev(0, za, block.Allocate, woff, bufs); err != nil {
		t.Fatalf("ZeroThenWritev of %d MiB: %v", nBufs*bufLen>>20, err)
	}
	got := block.AlignedBuf(bufLen, block.DefaultMemAlign)
	for i := range nBufs {
		if err := block.ReadAt(f, got, woff+int64(i)*bufLen); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, buf) {
			t.Fatalf("buffer %d of the vector reads back wrong", i)
		}
	}
}

// TestReview46_BounceOver2GiB (U1, R6): more than 2 GiB through the
// O_DIRECT bounce path in one call each: a write from unaligned buffers
// (aligned offset: bounceWrite), a write at an unaligned offset ending at
// an unaligned EOF (rmwWrite, which pads past the end and sets the size
// back), and a read at an unaligned offset into unaligned buffers
// (bounceRead). The writes repeat one 64 MiB buffer; the read needs
// 2.1 GiB of memory.
func TestReview46_BounceOver2GiB(t *testing.T) {
	bigEnv(t)
	const bufLen, nBufs = 64 << 20, 34 // 2176 MiB
	f := openTemp(t, Options{Backend: Ring, Direct: true})
	a := f.Caps().Align
	src := pattern(48, bufLen+1)
	buf := src[1:] // unaligned in memory
	bufs := make([][]byte, nBufs)
	for i := range bufs {
		bufs[i] = buf
	}
	total := int64(nBufs) * bufLen
	check := func(off int64) {
		t.Helper()
		got := block.AlignedBuf(bufLen, block.DefaultMemAlign)
		for i := range int64(nBufs) {
			if err := block.ReadAt(f, got, off+i*bufLen); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, buf) {
				t.Fatalf("buffer %d at %d reads back wrong", i, off)
			}
		}
	}
	// Aligned offset and length, unaligned buffers.
	before := f.Metrics()
	if err := f.Writev(a, bufs); err != nil {
		t.Fatal(err)
	}
	if m := f.Metrics().Sub(before); m.Misaligned == 0 || m.RMW != 0 {
		t.Fatalf("the write did not bounce without read-modify-write: %v", m)
	}
	check(a)
	// Unaligned offset, growing the file to an unaligned end.
	off := 3*a + 1
	before = f.Metrics()
	if err := f.Writev(off, bufs); err != nil {
		t.Fatal(err)
	}
	if m := f.Metrics().Sub(before); m.RMW == 0 {
		t.Fatalf("the write was no read-modify-write: %v", m)
	}
	if sz, err := f.Size(); err != nil || sz != off+total {
		t.Fatalf("Size %d, %v; want %d", sz, err, off+total)
	}
	head := make([]byte, 2*a+1)
	if err := block.ReadAt(f, head, a); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, buf[:2*a+1]) {
		t.Fatal("the bytes before the read-modify-write changed")
	}
	// Unaligned offset and buffers, past EOF at the end (zeros, B2).
	rd := make([][]byte, nBufs+1)
	mem := make([]byte, total+a+int64(len(rd))) // one byte before each buffer: unaligned
	for i := range rd {
		n := int64(bufLen)
		if i == nBufs {
			n = a
		}
		rd[i], mem = mem[1:1+n], mem[1+n:]
	}
	if err := f.Readv(off, rd); err != nil {
		t.Fatal(err)
	}
	for i := range nBufs {
		if !bytes.Equal(rd[i], buf) {
			t.Fatalf("read buffer %d wrong", i)
		}
	}
	if !bytes.Equal(rd[nBufs], make([]byte, a)) {
		t.Fatal("bytes past EOF are not zeros")
	}
}
