//go:build linux

package uring

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/qring/qring/block"
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
	"golang.org/x/sys/unix"
)

// TestBlockDevice (U15): on a block device, Size is the device's size
// (fstat says 0), a Truncate up to it changes nothing and a larger one
// is refused, as QEMU's host_device; the last block reads and writes.
func TestBlockDevice(t *testing.T) {
	const size = 8 << 20
	dev := looptest.LoopDevice(t, size, 2*size)
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f, err := Open(dev, c.opt)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if n, err := f.Size(); err != nil || n != size {
				t.Fatalf("Size = %d, %v; want %d", n, err, size)
			}
			if !f.Caps().Fixed {
				t.Fatal("a block device's Caps do not say Fixed")
			}
			if err := f.Truncate(size / 2); err != nil {
				t.Fatalf("Truncate below the device size: %v", err)
			}
			if err := f.Truncate(size + 4096); !errors.Is(err, errCannotGrow) {
				t.Fatalf("Truncate past the device size: %v, want refused", err)
			}
			if n, err := f.Size(); err != nil || n != size {
				t.Fatalf("Size after Truncate = %d, %v; want %d", n, err, size)
			}
			want := bytes.Repeat([]byte{0x5a}, 4096)
			if err := f.Writev(size-4096, [][]byte{want}); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 8192)
			if err := f.Readv(size-4096, [][]byte{got}); err != nil {
				t.Fatal(err)
			}
			testkit.MustEqual(t, got, append(want, make([]byte, 4096)...), "last block, then past the end (B2)")
			// Zeroing past the end is ENOSPC, not a refused mode: the
			// File still zeroes efficiently after it (U15, U2).
			err = f.WriteZeroes(size-64<<10, 128<<10, block.Allocate)
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("zeroing past the device's end: %v, want ENOSPC", err)
			}
			if err := f.Writev(size, [][]byte{want}); !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("writing past the device's end: %v, want ENOSPC", err)
			}
			if err := f.WriteZeroes(0, 64<<10, block.MayUnmap); err != nil {
				t.Fatalf("zeroing inside the device after one past its end: %v", err)
			}
			if !f.punchOK.Load() {
				t.Fatal("hole punching turned off by a zeroing past the end")
			}
		})
	}
}

// TestBlockDeviceGrows (U15): a device grown while a File is open (an
// LVM or loop resize) is seen: Size reports the new size and a write past
// the old end lands, as QEMU's host_device reads its length each time.
func TestBlockDeviceGrows(t *testing.T) {
	dev := looptest.LoopDevice(t, 4<<20, 32<<20)
	f, err := Open(dev, Options{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	looptest.GrowLoopDevice(t, dev, 8<<20)
	want := bytes.Repeat([]byte{0x3c}, 4096)
	if err := f.Writev(5<<20, [][]byte{want}); err != nil {
		t.Fatalf("write past the old end of a grown device: %v", err)
	}
	if n, err := f.Size(); err != nil || n != 8<<20 {
		t.Fatalf("Size after growth = %d, %v; want %d", n, err, 8<<20)
	}
}

// TestBlockDeviceMisalignedZeroing (U15, U2): a buffered zeroing that is
// not whole sectors fallocates the sectors inside and writes zeros at the
// edges; the kernel's EINVAL for a misaligned fallocate must not turn
// hole punching off for the open.
func TestBlockDeviceMisalignedZeroing(t *testing.T) {
	const size = 8 << 20
	dev := looptest.LoopDevice(t, size, 2*size)
	f, err := Open(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := bytes.Repeat([]byte{0xee}, 2<<20)
	if err := f.Writev(0, [][]byte{junk}); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteZeroes(100, 1<<20+1000, block.MayUnmap); err != nil {
		t.Fatal(err)
	}
	if !f.punchOK.Load() || !f.zeroOK.Load() {
		t.Fatalf("a misaligned zeroing turned fallocate off (punch %v, zero range %v)", f.punchOK.Load(), f.zeroOK.Load())
	}
	got := make([]byte, 2<<20)
	if err := f.Readv(0, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(junk)
	clear(want[100 : 100+1<<20+1000])
	testkit.MustEqual(t, got, want, "after zeroing [100, +1 MiB+1000)")
}

// TestBlockDeviceAllocateNoFallback (U15, U2, block B3): on a block
// device whose WRITE ZEROES does not work (a loop device over tmpfs:
// the loop driver advertises it, tmpfs refuses ZERO_RANGE, and the
// kernel then writes zero pages), zeroing with Allocate, alone or linked
// ahead of a write (U4), is refused with nothing written, instead of
// succeeding through zero pages written by the kernel.
func TestBlockDeviceAllocateNoFallback(t *testing.T) {
	dev := junkDevice(t)
	for _, c := range configs() {
		t.Run(c.name, func(t *testing.T) {
			f := openJunk(t, dev, c.opt, nil)
			err := f.WriteZeroes(0, 256<<10, block.Allocate)
			if !errors.Is(err, block.ErrNotSupported) {
				t.Fatalf("WriteZeroes Allocate on %s (zeroing %s): %v, want ErrNotSupported", dev, f.Zeroing(), err)
			}
			data := bytes.Repeat([]byte{0x11}, 4096)
			err = f.ZeroThenWritev(256<<10, 256<<10, block.Allocate, 256<<10, [][]byte{data})
			if !errors.Is(err, block.ErrNotSupported) {
				t.Fatalf("ZeroThenWritev Allocate: %v, want ErrNotSupported", err)
			}
			if f.Caps().ZeroFlags&block.Allocate != 0 {
				t.Fatal("Caps offer Allocate on a block device without efficient zeroing")
			}
			mustJunk(t, f)
		})
	}
}

// TestBlockDeviceWriteZeroesRefusedLate (U15, U4, block B3): where Open
// believed FALLOC_FL_WRITE_ZEROES and the device refuses it, zeroing
// with Allocate, alone or linked ahead of a write, is refused with
// nothing written (not ZERO_RANGE, which writes zero pages there; and
// the kernel does not cancel a write linked after a refused fallocate).
func TestBlockDeviceWriteZeroesRefusedLate(t *testing.T) {
	dev := junkDevice(t)
	for _, c := range configs() {
		for _, linked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/linked=%v", c.name, linked), func(t *testing.T) {
				f := openJunk(t, dev, c.opt, func(f *File) {
					// As Open sets them where it believes WRITE_ZEROES
					// works (a loop device over tmpfs does not take it).
					f.wzOK.Store(true)
					f.allocOK.Store(true)
				})
				var err error
				if linked {
					err = f.ZeroThenWritev(0, 256<<10, block.Allocate, 256<<10, [][]byte{bytes.Repeat([]byte{0x11}, 4096)})
				} else {
					err = f.WriteZeroes(0, 256<<10, block.Allocate)
				}
				if !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("zeroing with Allocate refused by the device: %v (zeroing %s), want ErrNotSupported", err, f.Zeroing())
				}
				mustRefuse(t, err, "WRITE_ZEROES")
				if f.Caps().ZeroFlags&block.Allocate != 0 || f.Caps().AllocWritten {
					t.Fatal("Caps still offer Allocate after WRITE_ZEROES was refused")
				}
				if err := f.WriteZeroes(0, 256<<10, block.Allocate); !errors.Is(err, block.ErrNotSupported) {
					t.Fatalf("zeroing with Allocate after the refusal: %v, want ErrNotSupported", err)
				}
				mustJunk(t, f)
			})
		}
	}
}

// junk is what the refused-zeroing tests write over the first MiB of
// their device, and must read back unchanged.
var junk = bytes.Repeat([]byte{0xa7}, 1<<20)

// junkDevice is a 4 MiB loop device over tmpfs, whose WRITE ZEROES does
// not work: the loop driver advertises it, tmpfs refuses ZERO_RANGE, and
// the kernel then writes zero pages (U15).
func junkDevice(t *testing.T) string {
	const size = 4 << 20
	return looptest.LoopDevice(t, size, 2*size)
}

// openJunk opens dev with o, lets set (if any) change the File as Open
// might have, and writes junk at 0; the File closes with the (sub)test.
func openJunk(t *testing.T, dev string, o Options, set func(*File)) *File {
	t.Helper()
	f, err := Open(dev, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if set != nil {
		set(f)
	}
	if err := f.Writev(0, [][]byte{junk}); err != nil {
		t.Fatal(err)
	}
	return f
}

// mustJunk checks that the first MiB of f still reads as junk: the
// refused zeroings wrote nothing (block B3).
func mustJunk(t *testing.T, f *File) {
	t.Helper()
	got := make([]byte, len(junk))
	if err := f.Readv(0, [][]byte{got}); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, junk, "after refused zeroings")
}
