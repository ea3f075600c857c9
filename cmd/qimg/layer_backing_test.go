package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestBackingVMDKAndVHD_LikeQemu: qcow2 images over a VMDK image (itself
// over a parent it outgrows) and over a VHD image (qemu-img create -b X
// -F vmdk / -F vpc; the engine's Q23) are read as qemu-img reads them:
// info, info --backing-chain, map (the layer and the file of each run),
// check, compare -s against the backing file, the bytes convert writes;
// a partial write over the backing file's data copies what it does not
// cover, as qemu-io's does; create over them and rebase onto a VMDK
// image are qemu-img's; and commit into the VMDK snapshot writes what
// qemu-img's writes.
func TestBackingVMDKAndVHD_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := workDir(t)
	base, top := filepath.Join(dir, "base.vmdk"), filepath.Join(dir, "top.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "4M")
	qemuIO(t, base, "vmdk", "write -P 0x11 0 1M", "write -P 0x12 2M 64k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", "-b", "base.vmdk", "-F", "vmdk", top, "6M")
	qemuIO(t, top, "vmdk", "write -P 0x22 512k 64k", "write -P 0x23 5M 64k")
	vhd := filepath.Join(dir, "d.vhd")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", vhd, "4M")
	qemuIO(t, vhd, "vpc", "write -P 0x31 0 64k", "write -P 0x32 3M 4k")

	over := map[string]string{}
	for name, c := range map[string]struct{ backing, fmt, size string }{
		"over-vmdk":         {"top.vmdk", "vmdk", ""},
		"over-vmdk-larger":  {"top.vmdk", "vmdk", "8M"},
		"over-vmdk-smaller": {"top.vmdk", "vmdk", "3M"},
		"over-vhd":          {"d.vhd", "vpc", ""},
	} {
		p := filepath.Join(dir, name+".qcow2")
		args := []string{"create", "-q", "-f", "qcow2", "-b", c.backing, "-F", c.fmt, p}
		if c.size != "" {
			args = append(args, c.size)
		}
		testkit.MustRun(t, "qemu-img", args...)
		qemuIO(t, p, "qcow2", "write -P 0x44 1M 64k")
		over[name] = p
	}
	for name, p := range over {
		t.Run(name, func(t *testing.T) {
			infoMapLikeQemu(t, p, []string{p}, []string{"--backing-chain", p})
			sameRun(t, "check", p)
			b := top
			if strings.Contains(name, "vhd") {
				b = vhd
			}
			sameRun(t, "compare", "-s", p, b)
			convertLikeQemu(t, dir, "conv-"+name, p, "qcow2", true, true)

			// A write into part of a cluster the backing file has data in.
			ours, theirs := filepath.Join(dir, name+"-w.qcow2"), filepath.Join(dir, name+"-wq.qcow2")
			cp(t, p, ours)
			cp(t, p, theirs)
			mustQ(t, "io", "-c", "write -P 0x55 520k 8k", "-c", "write -P 0x56 2052k 4k", ours)
			qemuIO(t, theirs, "qcow2", "write -P 0x55 520k 8k", "write -P 0x56 2052k 4k")
			testkit.QemuCheck(t, ours)
			testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		})
	}

	// create over them: qemu-img's image, byte for byte (the size taken
	// from the backing file).
	for _, c := range [][2]string{{"top.vmdk", "vmdk"}, {"d.vhd", "vpc"}} {
		ours, theirs := filepath.Join(dir, "c-"+c[1]+".qcow2"), filepath.Join(dir, "c-"+c[1]+"-q.qcow2")
		mustQ(t, "create", "-q", "-f", "qcow2", "-b", c[0], "-F", c[1], ours)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", c[0], "-F", c[1], theirs)
		if !bytes.Equal(mustRead(t, ours), mustRead(t, theirs)) {
			t.Errorf("create -b %s -F %s: not qemu-img's image", c[0], c[1])
		}
	}

	// rebase onto a VMDK image, as qemu-img's (safe mode: what differs
	// is copied in).
	ours, theirs := filepath.Join(dir, "rebase.qcow2"), filepath.Join(dir, "rebase-q.qcow2")
	cp(t, over["over-vmdk"], ours)
	cp(t, over["over-vmdk"], theirs)
	mustQ(t, "rebase", "-b", "base.vmdk", "-F", "vmdk", ours)
	testkit.MustRun(t, "qemu-img", "rebase", "-b", "base.vmdk", "-F", "vmdk", theirs)
	testkit.QemuCheck(t, ours)
	testkit.MustRun(t, "qemu-img", "compare", ours, over["over-vmdk"])
	if h, q := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours), testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs); h != q {
		t.Errorf("map after rebase differs:\nours:\n%s\nqemu-img's:\n%s", h, q)
	}

	// commit into the VMDK snapshot, as qemu-img commits into a copy of
	// the same chain: its new grains copy their parent's bytes first
	// (vmdk's KD13).
	dir2 := filepath.Join(dir, "q")
	if err := os.Mkdir(dir2, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"base.vmdk", "top.vmdk", "top-s001.vmdk", "over-vmdk.qcow2"} {
		cp(t, filepath.Join(dir, f), filepath.Join(dir2, f))
	}
	mustQ(t, "commit", over["over-vmdk"])
	testkit.MustRun(t, "qemu-img", "commit", filepath.Join(dir2, "over-vmdk.qcow2"))
	testkit.QemuCheck(t, top)
	for _, f := range []string{"top.vmdk", "over-vmdk.qcow2"} {
		testkit.MustRun(t, "qemu-img", "compare", filepath.Join(dir, f), filepath.Join(dir2, f))
	}
	if a, b := testkit.MustRun(t, "qemu-img", "map", top), testkit.MustRun(t, "qemu-img", "map", filepath.Join(dir2, "top.vmdk")); strings.ReplaceAll(a, dir, dir2) != b {
		t.Errorf("map after commit differs:\nours:\n%s\nqemu-img's:\n%s", a, b)
	}
}
