package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestXL2_Acceptance: issue 18's acceptance commands for subclusters
// (extended L2 entries).
func TestXL2_Acceptance(t *testing.T) {
	d := qemuDir(t)
	p := func(n string) string { return filepath.Join(d, n) }

	// QEMU writes 8k inside one 128k cluster; qimg convert reads what
	// qemu-img convert reads.
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", p("b.qcow2"), "1G")
	qio(t, p("b.qcow2"), "write -P 0x11 4k 8k")
	mustQ(t, "convert", "-O", "raw", p("b.qcow2"), p("ours.raw"))
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p("b.qcow2"), p("qemu.raw"))
	// Both are 1 GiB, mostly holes: compare them without reading them
	// into memory.
	testkit.MustRun(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", p("ours.raw"), p("qemu.raw"))
	os.Remove(p("ours.raw"))
	os.Remove(p("qemu.raw"))

	// qimg creates with subclusters and writes; QEMU checks and reads.
	mustQ(t, "create", "-f", "qcow2", "-o", "extended_l2=on", p("q.qcow2"), "64M")
	qimgIO(t, p("q.qcow2"), "write -P 0x22 1k 3k", "write -P 0x33 100k 200k", "write -z 64k 8k",
		"write -P 0x44 70k 1k", "write -P 0x55 1M 4k", "discard 2M 128k", "write -P 0x66 2M 2k")
	testkit.QemuCheck(t, p("q.qcow2"))
	qio(t, p("q.qcow2"), "read -P 0 0 1k", "read -P 0x22 1k 3k", "read -P 0 4k 60k", "read -P 0 64k 6k",
		"read -P 0x44 70k 1k", "read -P 0 71k 29k", "read -P 0x33 100k 200k", "read -P 0x55 1M 4k",
		"read -P 0x66 2M 2k", "read -P 0 2050k 126k")
	if info := testkit.MustRun(t, "qemu-img", "info", p("q.qcow2")); !bytes.Contains([]byte(info), []byte("extended l2: true")) {
		t.Errorf("qemu-img info:\n%s", info)
	}
}

// With extended L2 entries the zero flag (bit 0) is reserved: QEMU reads
// it as clear, its check finds nothing, and its subcluster bitmap says
// what reads as zeros. qimg's check reported a corruption and its reads
// failed ("zero flag not allowed"). Found by the session's hostile-image
// review.
func TestXL2_ZeroFlagIgnoredLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "x.qcow2") // a foreign image: bit 0 set
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", p, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	damage(t, p, func(f imageFile) {
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		f.putU64(l2, f.u64(l2)|1)
	})
	if ours, theirs := qimgAndQemu(t, "check", p); ours != theirs {
		t.Errorf("check:\nqimg: %s\nqemu-img: %s", ours, theirs)
	}
	mustQ(t, "io", "-r", "-c", "read -P 1 0 64k", p)
	mustQ(t, "io", "-c", "write -P 2 0 4k", "-c", "write -z 8k 4k", p)
	testkit.QemuCheck(t, p)
	testkit.MustRun(t, "qemu-io", "-c", "read -P 2 0 4k", "-c", "read -P 1 4k 4k", "-c", "read -P 0 8k 4k", "-c", "read -P 1 12k 52k", p)
}
