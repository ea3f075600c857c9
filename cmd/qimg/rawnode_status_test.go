package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// rawmapSame runs args through qimg and qemu-img and fails on any
// difference in output, message or exit code.
func rawmapSame(t *testing.T, args ...string) {
	t.Helper()
	out, errOut, code := runQ(t, args...)
	qout, qerr, qcode := testkit.Run(t, "qemu-img", args...)
	out = strings.ReplaceAll(out, `, "compressed": false`, "") // the 8.2 layout (documented)
	errOut = strings.ReplaceAll(strings.ReplaceAll(errOut, "qimg: "+args[0]+": ", ""), "image spec: ", "")
	qerr = strings.ReplaceAll(qerr, "qemu-img: ", "")
	if out != qout || errOut != qerr || code != qcode {
		t.Errorf("%q:\nqimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", args, code, out, errOut, qcode, qout, qerr)
	}
}

// rawmapImages makes qcow2 images with and without a backing file (one
// shorter than the overlay, with 4 KiB clusters), a VMDK over a shorter
// parent and a sparse VHD, in d.
func rawmapImages(t *testing.T, d string) (base, top, shortTop, vmdkTop, vpc string) {
	base, top = filepath.Join(d, "b.qcow2"), filepath.Join(d, "t.qcow2")
	short, shortTop := filepath.Join(d, "s.qcow2"), filepath.Join(d, "st.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 0 512k", "-c", "write -P 4 2M 64k", "-c", "write -z 3M 128k", base)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 5 64k 64k", "-c", "write -z 256k 64k", top)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", short, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 3 0 64k", short)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", short, "-F", "qcow2", shortTop, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 5 512k 4k", "-c", "write -P 5 2M 64k", shortTop)
	parent := filepath.Join(d, "p.vmdk")
	vmdkTop, vpc = filepath.Join(d, "c.vmdk"), filepath.Join(d, "sp.vpc")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", parent, "1000k")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 3 0 64k", parent)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "backing_file="+parent+",backing_fmt=vmdk", vmdkTop, "4M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 7 2M 64k", vmdkTop)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vpc", vpc, "8M")
	testkit.MustRun(t, "qemu-io", "-f", "vpc", "-c", "write -P 1 2M 64k", "-c", "write -z 4M 4k", vpc)
	return base, top, shortTop, vmdkTop, vpc
}

// TestRawNodeCompare: qemu-img compare asks each image's block status
// (bdrv_block_status_above); a raw node over a format node answers with
// its child's own status (imgopen.StatusDev), so -s compares those
// status words as qemu-img does: qimg took the raw node for data
// everywhere, and raw over a qcow2 without a backing file against that
// qcow2 was a status mismatch where QEMU finds them identical.
//
// Without -s qimg compares the contents, deliberately unlike qemu-img:
// QEMU takes what the child leaves to its backing file for zeros without
// reading it (raw over t.qcow2 against t.qcow2, identical contents, is
// "Content mismatch at offset 0" there). So where a child has a backing
// file, the answer wanted is qemu-img compare's of the two images'
// contents, copied to raw files; elsewhere it is qemu-img's own.
func TestRawNodeCompare(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	base, top, shortTop, vmdkTop, vpc := rawmapImages(t, d)
	raw := func(win, drv, img string) string {
		return "driver=raw," + win + "file.driver=" + drv + ",file.file.filename=" + img
	}
	pairs := []struct {
		a, b   string
		hidden bool // a child has a backing file: contents, not status
	}{
		{raw("", "qcow2", top), "driver=qcow2,file.filename=" + top, true},
		{raw("", "qcow2", base), "driver=qcow2,file.filename=" + base, false},
		{raw("", "qcow2", top), raw("", "qcow2", base), true},
		{raw("offset=65536,", "qcow2", top), raw("", "qcow2", base), true},
		{raw("", "qcow2", shortTop), "driver=qcow2,file.filename=" + shortTop, true},
		{raw("", "vmdk", vmdkTop), "driver=vmdk,file.filename=" + vmdkTop, true},
		{raw("", "qcow2", shortTop), raw("", "vmdk", vmdkTop), true},
		{raw("offset=512,", "vpc", vpc), raw("offset=512,", "qcow2", top), true},
		{raw("offset=512,", "vpc", vpc), raw("offset=512,", "qcow2", base), false},
	}
	asRaw := func(spec string) string {
		f, err := os.CreateTemp(d, "c*.raw")
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", "--image-opts", spec, f.Name())
		return "driver=raw,file.filename=" + f.Name()
	}
	for _, p := range pairs {
		for _, ab := range [][2]string{{p.a, p.b}, {p.b, p.a}} {
			rawmapSame(t, "compare", "-s", "--image-opts", ab[0], ab[1])
			if !p.hidden {
				rawmapSame(t, "compare", "--image-opts", ab[0], ab[1])
				continue
			}
			out, errOut, code := runQ(t, "compare", "--image-opts", ab[0], ab[1])
			qout, qerr, qcode := testkit.Run(t, "qemu-img", "compare", "--image-opts", asRaw(ab[0]), asRaw(ab[1]))
			if out != qout || code != qcode {
				t.Errorf("compare %s %s: qimg exit %d\n%s%s\nqemu-img of their contents exit %d\n%s%s", ab[0], ab[1], code, out, errOut, qcode, qout, qerr)
			}
		}
	}
}

// TestRawNodeConvertBackingMatchesQemu: convert -B asks the
// source's block status above no base (a raw node has no backing file):
// what the raw node's qcow2 child leaves to its own backing file is
// unallocated, so qemu-img leaves it to the output's backing file.
// qimg took the raw node for data everywhere and copied the child's
// backing file's data into the output.
func TestRawNodeConvertBackingMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	base, top, _, _, _ := rawmapImages(t, d)
	for _, win := range []string{"", "offset=65024,size=2M,"} {
		spec := "driver=raw," + win + "file.driver=qcow2,file.file.filename=" + top
		out, want := filepath.Join(d, "o.qcow2"), filepath.Join(d, "q.qcow2")
		mustQ(t, "convert", "-O", "qcow2", "-B", base, "-F", "qcow2", "--image-opts", spec, out)
		testkit.MustRun(t, "qemu-img", "convert", "-O", "qcow2", "-B", base, "-F", "qcow2", "--image-opts", spec, want)
		got, _, _ := testkit.Run(t, "qemu-img", "map", "--output=json", out)
		exp, _, _ := testkit.Run(t, "qemu-img", "map", "--output=json", want)
		if got != exp {
			t.Errorf("%s: convert -B output's map\n%s\nqemu-img's\n%s", spec, got, exp)
		}
	}
}

// TestRawNodeVMDKParentMapMatchesQemu: a raw node over a VMDK with
// a parent maps the VMDK node alone (the raw driver passes its child's
// own status through; qemu-img map walks no parent under the raw node):
// grains left to the parent are neither present, zero nor data, zero
// from the grain after the parent's end on. qimg walked into the parent
// and showed its data at depth 1.
func TestRawNodeVMDKParentMapMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	_, _, _, vmdkTop, _ := rawmapImages(t, d)
	for _, win := range []string{"", "offset=65024,size=2M,", "offset=1048576,"} {
		spec := "driver=raw," + win + "file.driver=vmdk,file.file.filename=" + vmdkTop
		for _, o := range []string{"human", "json"} {
			rawmapSame(t, "map", "--output="+o, "--image-opts", spec)
			rawmapSame(t, "map", "--output="+o, "--start-offset=1000000", "--image-opts", spec)
		}
	}
}
