package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// External data files (qcow2 DF1-DF4): images qemu-img makes with
// data_file, through qimg's readers, line for line with qemu-img's.

// dataFileQemuImage creates name in dir with an external data file
// (absolute: QEMU opens a relative name against the working directory)
// and runs the qemu-io commands on it.
func dataFileQemuImage(t *testing.T, dir, name, opts string, cmds ...string) string {
	t.Helper()
	p := filepath.Join(dir, name+".qcow2")
	o := "data_file=" + filepath.Join(dir, name+".data")
	if opts != "" {
		o += "," + opts
	}
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", o, p, "4M")
	qemuIO(t, p, "qcow2", cmds...)
	return p
}

func TestDataFile_ReadersLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	imgs := []string{
		dataFileQemuImage(t, dir, "plain", "", "write -P 0x11 0 64k", "write -P 0x12 1M 1M",
			"write -P 0x13 100k 4k", "discard 1536k 64k", "write -z 2M 128k"),
		dataFileQemuImage(t, dir, "raw", "data_file_raw=on", "write -P 0x21 1M 64k", "write -z 2M 64k", "discard 3M 64k"),
	}
	for _, p := range imgs {
		for _, args := range [][]string{
			{"info", p}, {"info", "--output=json", p}, {"map", p}, {"check", p}, {"check", "--output=json", p},
		} {
			if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
				t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
			}
		}
		// qimg's JSON map has qemu-img 8.2's "compressed" key.
		ours, theirs := qimgAndQemu(t, "map", "--output=json", p)
		if strings.ReplaceAll(ours, `, "compressed": false`, "") != theirs {
			t.Errorf("map --output=json %s:\nqimg:\n%s\nqemu-img:\n%s", p, ours, theirs)
		}
		ourRaw, theirRaw := filepath.Join(dir, "ours.raw"), filepath.Join(dir, "theirs.raw")
		mustQ(t, "convert", "-O", "raw", p, ourRaw)
		testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", p, theirRaw)
		a, _ := os.ReadFile(ourRaw)
		b, _ := os.ReadFile(theirRaw)
		if !bytes.Equal(a, b) {
			t.Errorf("convert -O raw %s differs from qemu-img's", p)
		}
		mustQ(t, "compare", p, theirRaw)
		// A convert of it to a plain qcow2 image reads the data file.
		out := filepath.Join(dir, "plain-copy.qcow2")
		mustQ(t, "convert", "-O", "qcow2", p, out)
		testkit.MustRun(t, "qemu-img", "compare", p, out)
	}
}

// TestDataFile_OpenErrorsLikeQemu: the images QEMU refuses to open for
// I/O are refused with its words, info (which opens no data file) shows
// them; and one with standard or extended L2 entries (qcow2 DF4) is
// written as qemu-io and qemu-img resize write it.
func TestDataFile_OpenErrorsLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	bad := testkit.Dir(t) // images qemu-img check cannot open either
	missing := dataFileQemuImage(t, bad, "missing", "", "write -P 0x11 0 64k")
	if err := os.Remove(filepath.Join(bad, "missing.data")); err != nil {
		t.Fatal(err)
	}
	noName := dataFileQemuImage(t, bad, "noname", "", "write -P 0x11 0 64k")
	testkit.MustRun(t, "qemu-img", "amend", "-o", "data_file=", noName)
	notFile := dataFileQemuImage(t, bad, "notfile", "", "write -P 0x11 0 64k")
	testkit.MustRun(t, "qemu-img", "amend", "-o", "data_file="+bad, notFile) // a directory
	for _, p := range []string{missing, noName, notFile} {
		for _, args := range [][]string{{"map", p}, {"check", p}, {"compare", p, p}} {
			_, stderr, code := runQ(t, args...)
			_, qstderr, qcode := testkit.Run(t, "qemu-img", args...)
			want := strings.TrimPrefix(strings.TrimSpace(qstderr), "qemu-img: ")
			if code == 0 || qcode == 0 || !strings.Contains(stderr, want) {
				t.Errorf("%q: qimg exit %d %q; qemu-img exit %d %q", args, code, stderr, qcode, qstderr)
			}
		}
		if ours, theirs := qimgAndQemu(t, "info", p); ours != theirs {
			t.Errorf("info %s:\nqimg:\n%s\nqemu-img:\n%s", p, ours, theirs)
		}
	}
	// Writes, a repair and a growth, with standard and extended L2
	// entries (DF4), as qemu-io and qemu-img do them.
	for i, opts := range []string{"", "extended_l2=on"} {
		ours := dataFileQemuImage(t, dir, fmt.Sprint("ours", i), opts, "write -P 0x11 0 64k")
		theirs := dataFileQemuImage(t, dir, fmt.Sprint("theirs", i), opts, "write -P 0x11 0 64k")
		mustQ(t, "io", "-c", "write -P 0x22 60k 8k", ours)
		testkit.MustRun(t, "qemu-io", "-c", "write -P 0x22 60k 8k", theirs)
		mustQ(t, "check", "-r", "all", ours)
		mustQ(t, "resize", ours, "8M")
		testkit.MustRun(t, "qemu-img", "resize", theirs, "8M")
		testkit.MustRun(t, "qemu-img", "check", ours)
		testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		if ours, theirs := qemuImgMap(t, ours), qemuImgMap(t, theirs); ours != theirs {
			t.Errorf("%q: map after the writes:\nours:\n%s\nQEMU's:\n%s", opts, ours, theirs)
		}
		for _, p := range []string{ours, theirs} {
			if fi, err := os.Stat(strings.TrimSuffix(p, ".qcow2") + ".data"); err != nil || fi.Size() != 8<<20 {
				t.Errorf("%s: data file %v, want 8 MiB", p, err)
			}
		}
	}
}

// qemuImgMap is qemu-img map's JSON of path.
func qemuImgMap(t *testing.T, path string) string {
	t.Helper()
	return testkit.MustRun(t, "qemu-img", "map", "--output=json", path)
}

// TestDataFile_ImageOptsLikeQemu: --image-opts data-file.filename=PATH
// reads a data file moved away from the name the header keeps, as
// qemu-img does.
func TestDataFile_ImageOptsLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	p := dataFileQemuImage(t, dir, "m", "", "write -P 0x11 0 64k", "write -P 0x12 1M 100k")
	moved := filepath.Join(dir, "moved.data")
	if err := os.Rename(filepath.Join(dir, "m.data"), moved); err != nil {
		t.Fatal(err)
	}
	spec := "driver=qcow2,file.filename=" + p + ",data-file.filename=" + moved
	for _, args := range [][]string{{"map", "--image-opts", spec}, {"check", "--image-opts", spec}, {"compare", "--image-opts", spec, spec}} {
		if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
			t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
		}
	}
	if err := os.Rename(moved, filepath.Join(dir, "m.data")); err != nil { // for the end's checks
		t.Fatal(err)
	}
}

// write -c on an image with an external data file fails as qemu-io's
// does, "Operation not supported", before its range is looked at (qimg
// said "Invalid argument" for an unaligned one and its own words for
// the others).
func TestDataFile_CompressedWriteLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	p := dataFileQemuImage(t, dir, "c", "cluster_size=4096")
	cmds := []string{"-c", "write -c -P 1 512 4096", "-c", "write -c -P 1 0 4096", "-c", "write -c -P 1 0 8192"}
	ours, oe, oc := runQ(t, append(append([]string{"io"}, cmds...), p)...)
	theirs, qe, qc := testkit.Run(t, "qemu-io", append(cmds, p)...)
	if ours != theirs || oc != qc || oe != "" || qe != "" {
		t.Errorf("qimg (exit %d):\n%s%s\nqemu-io (exit %d):\n%s%s", oc, ours, oe, qc, theirs, qe)
	}
}
