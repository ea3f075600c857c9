package main

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// junkDevice is a loop device of size bytes full of random data: a disk
// with old data on it, which nothing may show through a new image.
func junkDevice(t *testing.T, size int64) string {
	t.Helper()
	dev := looptest.LoopDevice(t, size, 2*size)
	junk := make([]byte, size)
	rand.Read(junk)
	if err := os.WriteFile(dev, junk, 0); err != nil {
		t.Fatal(err)
	}
	return dev
}

// TestCreateOnBlockDevice_FailureKeepsNode: a create or convert that
// fails on a block device leaves the device's node where it was (it used
// to remove the path on any failure), as qemu-img does.
func TestCreateOnBlockDevice_FailureKeepsNode(t *testing.T) {
	dir := qemuDir(t)
	dev := junkDevice(t, 1<<20)
	if _, _, code := runQ(t, "create", "-f", "qcow2", dev, "100T"); code == 0 {
		t.Fatal("a 100 TiB qcow2 on a 1 MiB device: created")
	}
	if _, err := os.Stat(dev); err != nil {
		t.Fatalf("after a failed create: %v", err)
	}
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "8M", "write -P 7 0 8M")
	if _, _, code := runQ(t, "convert", "-O", "qcow2", src, dev); code == 0 {
		t.Fatal("8 MiB of data converted onto a 1 MiB device")
	}
	if _, err := os.Stat(dev); err != nil {
		t.Fatalf("after a failed convert: %v", err)
	}
}

// TestConvertRawOntoBlockDevice: converting to raw onto a device full of
// old data gives the source's contents, zeros included (holes are
// skipped by the copy, so the device is zeroed first), by qemu-img
// compare; and a qcow2 convert onto it passes qemu-img check and
// compares equal.
func TestConvertRawOntoBlockDevice(t *testing.T) {
	dir := qemuDir(t)
	const size = 16 << 20
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "16M",
		"write -P 0x11 1M 64k", "write -P 0x22 9M 3M", "write -z 13M 1M")
	for _, ofmt := range []string{"raw", "qcow2"} {
		dev := junkDevice(t, size)
		mustQ(t, "convert", "-O", ofmt, src, dev)
		if ofmt == "qcow2" {
			testkit.QemuCheck(t, dev)
		}
		if out, _, code := testkit.Run(t, "qemu-img", "compare", "-f", "qcow2", "-F", ofmt, src, dev); code != 0 {
			t.Errorf("-O %s onto a device with old data: qemu-img compare: %s", ofmt, out)
		}
	}
}

// TestResizeRawBlockDevice: a raw block device keeps its size, as QEMU's
// host_device: resizing it to its own size succeeds, to any other size
// is refused with qemu-img's message.
func TestResizeRawBlockDevice(t *testing.T) {
	testkit.NeedQemu(t)
	dev := looptest.LoopDevice(t, 16<<20, 32<<20)
	for _, args := range [][]string{{"32M"}, {"16M"}, {"--shrink", "8M"}} {
		qargs := append([]string{"resize", "-f", "raw", dev}, args...)
		_, qerr, qcode := testkit.Run(t, "qemu-img", qargs...)
		_, ours, code := runQ(t, qargs...)
		if code != qcode {
			t.Errorf("resize %v: qimg exit %d (%s), qemu-img %d (%s)", args, code, ours, qcode, qerr)
		}
		if qcode != 0 && !strings.Contains(ours, "Cannot resize device files") {
			t.Errorf("resize %v: qimg says %q, qemu-img %q", args, ours, qerr)
		}
	}
}

// TestCreateRawOnBlockDevice_ClearsOldFormat: create -f raw on a device
// that held a qcow2 image zeroes the first sector, as qemu-img does, so
// the device probes as raw and not as the old image.
func TestCreateRawOnBlockDevice_ClearsOldFormat(t *testing.T) {
	testkit.NeedQemu(t)
	dev := junkDevice(t, 16<<20)
	mustQ(t, "create", "-f", "qcow2", dev, "8M")
	mustQ(t, "create", "-f", "raw", dev, "16M")
	out := testkit.MustRun(t, "qemu-img", "info", dev)
	if !strings.Contains(out, "file format: raw") {
		t.Fatalf("after create -f raw over a qcow2 image, qemu-img info says:\n%s", out)
	}
}

// TestConvertOddRawOntoBlockDevice: a raw source whose size is not whole
// sectors, converted raw onto a device with old data, reads back with
// zeros up to the end of its last sector, as qemu-img leaves it.
func TestConvertOddRawOntoBlockDevice(t *testing.T) {
	dir := qemuDir(t)
	src := filepath.Join(dir, "odd.raw")
	data := bytes.Repeat([]byte{0x42}, 1000)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dev := junkDevice(t, 1<<20)
	mustQ(t, "convert", "-f", "raw", "-O", "raw", src, dev)
	got := make([]byte, 1024)
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	testkit.MustEqual(t, got, append(data, make([]byte, 24)...), "the device's first sectors after the convert")
}
