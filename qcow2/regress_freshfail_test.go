package qcow2

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/qring/qring/block/memdev"
)

// The allocator's own data write into a fresh cluster (only the data is
// written: the hole around it reads as zeros, as the backing file does
// there) failed after an early write into the same cluster had
// succeeded: the cluster was linked (Q10), and the allocator's range,
// whose old value was the backing file's data, read as the hole's
// zeros, a value it never held. Found by a review helper. A fresh
// cluster is now ready early only where the data's range reads as
// zeros too.
func TestRegress_FreshFailedAllocatorWriteKeepsBacking(t *testing.T) {
	bmem := memdev.New(memdev.Options{})
	if err := CreateDevice(bmem, CreateOptions{ClusterSize: 4096, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	b, err := OpenDevice(bmem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Repeat([]byte{0xb0}, 4096)
	mustWrite(t, b, old, 0) // only [0,4K) of the overlay's 64K cluster holds data
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b, err = OpenDevice(bmem, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{ClusterSize: 64 << 10, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	h := newHoldWrites(mem)
	h.fail = errors.New("injected EIO")
	im, err := OpenDevice(h, Options{Backing: b})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	h.arm(func(off, n int64) bool { return n == 4096 }) // the allocator's data, written alone
	ch1 := make(chan error, 1)
	go func() { _, err := im.WriteAt(bytes.Repeat([]byte{0x11}, 4096), 0); ch1 <- err }()
	waitCh(t, h.arrived, "the allocator's data write")
	ch2 := make(chan error, 1)
	go func() { _, err := im.WriteAt(bytes.Repeat([]byte{0x22}, 4096), 8192); ch2 <- err }()
	// Without the fix the second write goes early and completes while
	// the first is held; with it, it waits for the first.
	for i := 0; i < 200 && im.Metrics().EarlyWrites == 0; i++ {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(h.release)
	if err := <-ch1; err == nil {
		t.Fatal("the held write did not fail")
	}
	if err := <-ch2; err != nil {
		t.Fatalf("second write: %v", err)
	}
	if got := readBack(t, im, 0, 4096); !bytes.Equal(got, old) {
		t.Fatalf("the failed write's range reads %#x...: not the backing data it held (0xb0)", got[:8])
	}
	if got := readBack(t, im, 8192, 4096); !bytes.Equal(got, bytes.Repeat([]byte{0x22}, 4096)) {
		t.Fatalf("the second write's range reads %#x...", got[:8])
	}
}
