package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// mapJSONNoCompressed is map --output=json without the "compressed" key
// (qemu-img 7.2 prints none).
func mapJSONNoCompressed(s string) string { return strings.ReplaceAll(s, `, "compressed": false`, "") }

// A qcow2 image over a json: spec backing file that is a raw window
// (driver=raw, offset, size) into a sparse file: the window's holes read
// as zeros to QEMU's block status. qemu-img map shows them as zero (and
// the file's offsets, shifted by the window's offset), and a partial zero
// write over them makes a zero cluster, as over a plain raw backing file.
func TestMixChain_JSONRawWindowHoles(t *testing.T) {
	d := qemuDir(t)
	big := filepath.Join(d, "big.raw")
	if err := os.WriteFile(big, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 8<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(big, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("abc"), 1<<20+300000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	spec := fmt.Sprintf(`json:{"driver":"raw","offset":1048576,"size":4194304,"file":{"driver":"file","filename":"%s"}}`, big)
	var imgs [2]string
	for i := range imgs {
		imgs[i] = filepath.Join(d, fmt.Sprintf("top%d.qcow2", i))
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", spec, "-F", "raw", imgs[i], "4M")
	}
	ours, qemu := qimgAndQemu(t, "map", "--output=json", imgs[0])
	if mapJSONNoCompressed(ours) != qemu {
		t.Errorf("map over a json: raw window:\nqimg:\n%s\nqemu-img:\n%s", ours, qemu)
	}
	// Nested windows: the file's offsets add up.
	nested := "driver=raw,offset=65536,size=1048576,file.driver=raw,file.offset=1048576,file.file.filename=" + big
	ours, qemu = qimgAndQemu(t, "map", "--output=json", "--image-opts", nested)
	if mapJSONNoCompressed(ours) != qemu {
		t.Errorf("map of nested raw windows:\nqimg:\n%s\nqemu-img:\n%s", ours, qemu)
	}
	mustQ(t, "io", "-c", "write -z 4096 4096", imgs[0])
	testkit.MustRun(t, "qemu-io", "-c", "write -z 4096 4096", imgs[1])
	a := testkit.MustRun(t, "qemu-img", "map", "--output=json", imgs[0])
	b := testkit.MustRun(t, "qemu-img", "map", "--output=json", imgs[1])
	if a != b {
		t.Errorf("after write -z 4096 4096 over the window's hole:\nqimg's image:\n%s\nqemu-io's image:\n%s", a, b)
	}
}

// compare -s of a VMDK or VHD image given as itself (not below a qcow2
// image) compares its block status as QEMU's vmdk and vpc drivers give
// it: an unallocated grain is zero and not allocated, not raw data.
func TestMixChain_CompareStrictVMDKVHD(t *testing.T) {
	d := qemuDir(t)
	vmdk := qemuImage(t, filepath.Join(d, "b.vmdk"), "vmdk", "4M", "write -P 5 1M 64k")
	vhd := filepath.Join(d, "b.vhd")
	testkit.MustRun(t, "qemu-img", "convert", "-O", "vpc", vmdk, vhd)
	ov := qemuOverlay(t, filepath.Join(d, "t.qcow2"), vmdk, "vmdk")
	ov2 := filepath.Join(d, "t2.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", vhd, "-F", "vpc", ov2)
	for _, c := range [][]string{
		{"-f", "qcow2", "-F", "vmdk", ov, vmdk},
		{"-f", "vmdk", "-F", "qcow2", vmdk, ov},
		{"-f", "qcow2", "-F", "vpc", ov2, vhd},
	} {
		args := append([]string{"compare", "-s"}, c...)
		o1, _, c1 := runQ(t, args...)
		o2, _, c2 := testkit.Run(t, "qemu-img", args...)
		if o1 != o2 || c1 != c2 {
			t.Errorf("%q: qimg exit %d %q, qemu-img exit %d %q", args, c1, o1, c2, o2)
		}
	}
}

// convert -B of a VMDK snapshot (a VMDK image with a parent) onto its
// parent leaves what the parent holds to the backing file, as qemu-img's
// convert asks the source's own layer (the same block status as
// compare -s): it copied the whole disk.
func TestMixChain_ConvertBackingVMDKSnapshot(t *testing.T) {
	d := qemuDir(t)
	p := qemuImage(t, filepath.Join(d, "p.vmdk"), "vmdk", "4M", "write -P 1 0 1M", "write -P 3 2M 512k")
	c := filepath.Join(d, "c.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", p, "-F", "vmdk", c)
	qemuIO(t, c, "vmdk", "write -P 2 512k 1M", "write -z 3M 128k")
	ours, qemu := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "qemu.qcow2")
	mustQ(t, "convert", "-f", "vmdk", "-O", "qcow2", "-B", p, "-F", "vmdk", c, ours)
	testkit.MustRun(t, "qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", "-B", p, "-F", "vmdk", c, qemu)
	testkit.MustRun(t, "qemu-img", "compare", c, ours)
	a := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours)
	b := testkit.MustRun(t, "qemu-img", "map", "--output=json", qemu)
	strip := func(s string) string { // host offsets differ
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if i := strings.Index(l, `, "offset"`); i >= 0 {
				l = l[:i]
			}
			out = append(out, l)
		}
		return strings.Join(out, "\n")
	}
	if strip(a) != strip(b) {
		t.Errorf("convert -B of a VMDK snapshot:\nqimg's output:\n%s\nqemu-img's output:\n%s", a, b)
	}
}
