package qcow2_test

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
	"github.com/qring/qring/uring"
	"github.com/qring/qring/uring/looptest"
)

// TestImageOnBlockDevice: an image created on a block device full of
// old data (as QEMU's host_device: nothing there reads as zeros) keeps
// every byte of the guest's scattered writes and reads zeros wherever
// the guest wrote nothing, by qemu-img compare against a raw reference,
// and passes qemu-img check; the device's size never changes, and no
// reserve ahead is claimed (the device is Fixed).
func TestImageOnBlockDevice(t *testing.T) {
	t.Parallel()
	testkit.NeedQemu(t)
	const devSize, vsize = 48 << 20, 32 << 20
	dev := looptest.LoopDevice(t, devSize, 2*devSize)
	junk := make([]byte, devSize)
	for i := range junk {
		junk[i] = byte(rand.Uint32() | 1)
	}
	if err := os.WriteFile(dev, junk, 0); err != nil {
		t.Fatal(err)
	}
	for _, direct := range []bool{true, false} {
		opener := qcow2.Opener(uring.Opener(uring.Options{Direct: direct}))
		if err := qcow2.Create(dev, qcow2.CreateOptions{Size: vsize, Opener: opener}); err != nil {
			t.Fatal(err)
		}
		im, err := qcow2.Open(dev, qcow2.Options{Opener: opener})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { im.Close() }) // before the device is detached, on any exit
		if p := im.Metrics().Prealloc; p.Ahead != 0 {
			t.Fatalf("direct=%v: prealloc %s on a block device, where nothing can be reserved", direct, p)
		}
		ref := make([]byte, vsize)
		buf := make([]byte, 4096)
		for range 600 {
			off := rand.Int64N(vsize/4096) * 4096
			for i := range buf {
				buf[i] = byte(rand.Uint32())
			}
			if err := im.Writev(off, [][]byte{buf}); err != nil {
				t.Fatal(err)
			}
			copy(ref[off:], buf)
		}
		if err := im.Close(); err != nil {
			t.Fatal(err)
		}
		refPath := filepath.Join(t.TempDir(), "ref.raw")
		if err := os.WriteFile(refPath, ref, 0o644); err != nil {
			t.Fatal(err)
		}
		testkit.QemuCheck(t, dev)
		if out, _, code := testkit.Run(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", dev, refPath); code != 0 {
			t.Fatalf("direct=%v: qemu-img compare: %s", direct, out)
		}
		if st, err := os.Stat(dev); err != nil || st.Mode()&os.ModeDevice == 0 {
			t.Fatalf("%s is no longer a device: %v", dev, err)
		}
	}
}

// TestCreateOnBlockDevice_DefaultOpener: the library's default device
// (block.OSFile) sees a block device's size too, and a Create that fails
// there leaves the node in place (it used to remove the path).
func TestCreateOnBlockDevice_DefaultOpener(t *testing.T) {
	testkit.NeedQemu(t)
	dev := looptest.LoopDevice(t, 1<<20, 2<<20)
	if err := qcow2.Create(dev, qcow2.CreateOptions{Size: 100 << 40}); err == nil {
		t.Fatal("a 100 TiB image (a 1.6 MiB L1 table) on a 1 MiB device: created")
	}
	if _, err := os.Stat(dev); err != nil {
		t.Fatalf("after a failed Create: %v", err)
	}
	if err := qcow2.Create(dev, qcow2.CreateOptions{Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	im, err := qcow2.Open(dev, qcow2.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { im.Close() })
	if err := im.Writev(1<<20, [][]byte{make([]byte, 4096)}); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.QemuCheck(t, dev)
}

// TestRebuildOnBlockDevice: check -r all rebuilds untrusted refcount
// structures on a block device, which cannot grow, inside its free
// clusters; qemu-img check finds the result clean and the data intact.
func TestRebuildOnBlockDevice(t *testing.T) {
	testkit.NeedQemu(t)
	dev := looptest.LoopDevice(t, 16<<20, 32<<20)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", dev, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 1M", dev)
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 64)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	rt := int64(binary.BigEndian.Uint64(hdr[48:]))
	// reftable[1] names the first data cluster (0x50000) as a refcount block.
	if _, err := f.WriteAt(binary.BigEndian.AppendUint64(nil, 0x50000), rt+8); err != nil {
		t.Fatal(err)
	}
	f.Close()
	opener := qcow2.Opener(uring.Opener(uring.Options{Direct: true}))
	im, err := qcow2.Open(dev, qcow2.Options{Opener: opener, Repair: true})
	if err != nil {
		t.Fatal(err)
	}
	r, err := im.Check(qcow2.CheckOptions{Repair: qcow2.RepairAll})
	if cerr := im.Close(); err == nil {
		err = cerr
	}
	if err != nil || !r.Clean() || r.CorruptionsFixed == 0 {
		t.Fatalf("-r all: %v %+v", err, r)
	}
	testkit.QemuCheck(t, dev)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 1 0 1M", dev)
}
