package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// vmdkChains creates VMDK images over parents (VMware snapshots) with
// qemu-img and fills every layer with qemu-io: a split sparse snapshot
// larger than its parent, a monolithic one, one smaller than its parent,
// one with zeroed grains over the parent's data, three layers, and a
// snapshot in a subdirectory whose hint climbs out of it (qemu-img makes
// no flat image with a parent). It returns name -> path.
func vmdkChains(t *testing.T, dir string) map[string]string {
	t.Helper()
	base := filepath.Join(dir, "base.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "4M")
	qemuIO(t, base, "vmdk", "write -P 0x11 0 1M", "write -P 0x12 2M 64k", "write -P 0x13 3584k 512")
	paths := map[string]string{}
	over := func(name, parent, size string, opts []string, cmds ...string) string {
		p := filepath.Join(dir, name+".vmdk")
		args := append([]string{"create", "-q", "-f", "vmdk"}, opts...)
		args = append(args, "-b", parent, "-F", "vmdk", p)
		if size != "" {
			args = append(args, size)
		}
		testkit.MustRun(t, "qemu-img", args...)
		qemuIO(t, p, "vmdk", cmds...)
		paths[name] = p
		return p
	}
	over("split-larger", "base.vmdk", "6M", []string{"-o", "subformat=twoGbMaxExtentSparse"},
		"write -P 0x22 512k 1M", "write -P 0x23 5M 64k")
	over("mono", "base.vmdk", "", nil, "write -P 0x24 64k 4k", "write -P 0x25 3M 512")
	over("smaller", "base.vmdk", "2M", nil, "write -P 0x26 1536k 4k")
	over("zeroed", "base.vmdk", "", []string{"-o", "zeroed_grain=on"}, "write -z 0 128k", "write -P 0x27 2M 4k")
	over("mid", "base.vmdk", "", nil, "write -P 0x31 1M 64k")
	over("three", "mid.vmdk", "", nil, "write -P 0x32 1056k 4k", "write -P 0x33 3M 4k")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	over("sub/snap", "../base.vmdk", "", nil, "write -P 0x34 0 4k")
	return paths
}

// TestVMDK_ParentLikeQemu: VMDK images with a parent read as qemu-img
// reads them (vmdk's KD6): info (the backing file and the whole chain),
// map (the layer each run comes from), check, and the bytes convert
// writes, raw and qcow2, are qemu-img's.
func TestVMDK_ParentLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := workDir(t)
	for name, p := range vmdkChains(t, dir) {
		t.Run(strings.ReplaceAll(name, "/", "-"), func(t *testing.T) {
			infoMapLikeQemu(t, p, []string{"-f", "vmdk", p}, []string{p}, []string{"--backing-chain", p})
			sameRun(t, "map", "--start-offset=1M", "--max-length=2M", p)
			sameRun(t, "check", p)
			convertLikeQemu(t, filepath.Dir(p), filepath.Base(name), p, "vmdk", true, true)
		})
	}
}

// TestVMDK_ParentErrorsLikeQemu: a parent that changed since the
// snapshot was taken (its CID is not the snapshot's parentCID) fails the
// reads that need it with qemu-img's and qemu-io's EINVAL, while info,
// map and check go on; a missing parent and one that is not a VMDK image
// are refused in qemu-img's words; a parent chain that loops is refused
// (QEMU opens it until it runs out of files).
func TestVMDK_ParentErrorsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := workDir(t)
	base := filepath.Join(dir, "base.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "4M")
	qemuIO(t, base, "vmdk", "write -P 0x11 0 1M")
	top := filepath.Join(dir, "top.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top)
	qemuIO(t, top, "vmdk", "write -P 0x22 512k 64k")

	// The parent written after the snapshot: qemu-io gives it a new CID.
	qemuIO(t, base, "vmdk", "write -P 0x13 3M 4k")
	for _, args := range [][]string{{"info", top}, {"map", top}, {"check", top}} {
		sameRun(t, args...)
	}
	for _, c := range []struct{ cmd, want string }{
		{"read 0 4k", "read failed: Invalid argument\n"},    // from the parent: refused
		{"read -P 0x22 512k 4k", "read 4096/4096 bytes at"}, // the snapshot's own grain
	} {
		o, _, code := runQ(t, "io", "-r", "-c", c.cmd, top)
		qo, _, qcode := testkit.Run(t, "qemu-io", "-r", "-c", c.cmd, top)
		if !strings.HasPrefix(o, c.want) || !strings.HasPrefix(qo, c.want) || code != qcode {
			t.Errorf("io %q: exit %d %q; qemu-io: exit %d %q", c.cmd, code, o, qcode, qo)
		}
	}
	out := filepath.Join(dir, "out.raw")
	_, e, code := runQ(t, "convert", "-O", "raw", top, out)
	_, qe, qcode := testkit.Run(t, "qemu-img", "convert", "-O", "raw", top, out)
	const first = "error while reading at byte 0: Invalid argument"
	if code != 1 || qcode != 1 || !strings.Contains(e, first) || !strings.Contains(qe, first) {
		t.Errorf("convert over a changed parent: exit %d %q; qemu-img: exit %d %q", code, e, qcode, qe)
	}

	// A missing parent, and a parent that is a raw file.
	for name, hint := range map[string]string{"missing": "nope.vmdk", "raw": "r.img"} {
		p := filepath.Join(dir, name+".vmdk")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", p, "4M")
		setVMDKParentHint(t, p, hint)
	}
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(dir, "r.img"), "4M")
	for _, name := range []string{"missing", "raw"} {
		p := filepath.Join(dir, name+".vmdk")
		sameRun(t, "info", p) // info opens no parent
		sameRun(t, "map", p)
		sameRun(t, "compare", p, p)
	}

	// A loop: the image is its own parent, or its parent's.
	a, b := filepath.Join(dir, "a.vmdk"), filepath.Join(dir, "b.vmdk")
	for _, p := range []string{a, b} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", p, "4M")
	}
	setVMDKParentHint(t, a, "b.vmdk")
	setVMDKParentHint(t, b, "a.vmdk")
	self := filepath.Join(dir, "self.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", self, "4M")
	setVMDKParentHint(t, self, "self.vmdk")
	for _, p := range []string{a, self} {
		if _, e, code := runQ(t, "map", p); code != 1 || !strings.Contains(e, "Could not open backing file: the VMDK parent chain loops back to an image in it") {
			t.Errorf("map of a looping chain %s: exit %d %q", p, code, e)
		}
	}
}

// setVMDKParentHint gives the descriptor file p a parentFileNameHint
// (after its createType line, where qemu-img writes one).
func setVMDKParentHint(t *testing.T, p, hint string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "createType=")
	j := i + strings.IndexByte(s[i:], '\n') + 1
	if i < 0 || j <= i {
		t.Fatalf("%s: no createType line", p)
	}
	s = s[:j] + "parentFileNameHint=\"" + hint + "\"\n" + s[j:]
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// infoMapLikeQemu: qimg info (human and JSON) with each of the argument
// lists, and map of p (human and JSON), print what qemu-img prints.
func infoMapLikeQemu(t *testing.T, p string, infoArgs ...[]string) {
	t.Helper()
	for _, a := range infoArgs {
		if h, q := qimgAndQemu(t, append([]string{"info"}, a...)...); h != q {
			t.Errorf("info %q differs:\nours:\n%s\nqemu-img:\n%s", a, h, q)
		}
		oj, qj := qimgAndQemu(t, append([]string{"info", "--output=json"}, a...)...)
		var ours, qemu any // an object, or with --backing-chain a list
		if err := errors.Join(json.Unmarshal([]byte(oj), &ours), json.Unmarshal([]byte(qj), &qemu)); err != nil || !reflect.DeepEqual(ours, qemu) {
			t.Errorf("info --output=json %q differs:\nours:\n%s\nqemu-img:\n%s", a, oj, qj)
		}
	}
	oj, qj := qimgAndQemu(t, "map", "--output=json", p)
	if om, qm := decodeMap(t, oj), decodeMap(t, qj); !reflect.DeepEqual(om, qm) {
		t.Errorf("map differs\nours: %s\nqemu: %s", oj, qj)
	}
	sameRun(t, "map", p)
}
