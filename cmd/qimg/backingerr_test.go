package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestBackingOpenError_LikeQemu: an image whose backing file is missing,
// one level down or two, fails to open in qemu-img's words ("Could not
// open backing file: Could not open 'PATH': No such file or directory",
// once per level) and exit code. The engine said "qcow2: opening backing
// file ...: open PATH: no such file or directory".
func TestBackingOpenError_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	// Before the directory's images are checked at the end, which needs
	// their backing files (cleanups run last first).
	t.Cleanup(func() {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, "gone.qcow2"), "1M")
	})
	ov := filepath.Join(d, "ov.qcow2")
	ov2 := filepath.Join(d, "ov2.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", filepath.Join(d, "gone.qcow2"), "-F", "qcow2", ov, "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", "ov.qcow2", "-F", "qcow2", ov2, "1M")
	for _, img := range []string{ov, ov2} {
		for _, args := range [][]string{{"convert", "-O", "raw", img, filepath.Join(d, "out.raw")}, {"compare", img, img}, {"map", img}, {"commit", img}} {
			_, e, code := runQ(t, args...)
			_, qe, qcode := testkit.Run(t, "qemu-img", args...)
			if e = asQemu(e); code != qcode || e != qe {
				t.Errorf("%q: exit %d %q; qemu-img: exit %d %q", args, code, e, qcode, qe)
			}
		}
	}
}

// TestBitmapWithoutBacking_LikeQemu: qemu-img bitmap opens the image
// without its backing file (its bitmaps are its own), so a missing
// backing file does not stop it; qimg refused to open the image.
func TestBitmapWithoutBacking_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	t.Cleanup(func() {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, "gone.qcow2"), "1M")
	})
	for _, img := range []string{filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-u", "-f", "qcow2", "-b", filepath.Join(d, "gone.qcow2"), "-F", "qcow2", img, "1M")
	}
	for _, args := range [][]string{{"--add", "-g", "128k", "b0"}, {"--disable", "b0"}, {"--remove", "b0"}} {
		_, e, code := runQ(t, append(append([]string{"bitmap"}, args[:len(args)-1]...), filepath.Join(d, "ours.qcow2"), args[len(args)-1])...)
		_, qe, qcode := testkit.Run(t, "qemu-img", append(append([]string{"bitmap"}, args[:len(args)-1]...), filepath.Join(d, "theirs.qcow2"), args[len(args)-1])...)
		if code != qcode || asQemu(e) != qe {
			t.Errorf("bitmap %q: exit %d %q; qemu-img: exit %d %q", args, code, e, qcode, qe)
		}
		if code != 0 {
			continue
		}
		got, _, _ := testkit.Run(t, "qemu-img", "info", "-U", filepath.Join(d, "ours.qcow2"))
		want, _, _ := testkit.Run(t, "qemu-img", "info", "-U", filepath.Join(d, "theirs.qcow2"))
		// Where the clusters land (the disk size) is each engine's.
		if dropLine(strings.ReplaceAll(got, "ours", "theirs"), "disk size:") != dropLine(want, "disk size:") {
			t.Errorf("bitmap %q: qemu-img info\n%s\nafter qemu-img's\n%s", args, got, want)
		}
	}
}

// dropLine is s without its lines that start with prefix.
func dropLine(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestRebaseMissingNewBacking_LikeQemu: a safe rebase onto a new backing
// file that does not exist, without -F, fails on opening it, as
// qemu-img's does, not on the missing -F.
func TestRebaseMissingNewBacking_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, n := range []string{"ours.qcow2", "theirs.qcow2"} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, n), "1M")
	}
	_, e, code := runQ(t, "rebase", "-b", "missing.qcow2", filepath.Join(d, "ours.qcow2"))
	_, qe, qcode := testkit.Run(t, "qemu-img", "rebase", "-b", "missing.qcow2", filepath.Join(d, "theirs.qcow2"))
	if code != qcode || asQemu(e) != qe {
		t.Errorf("exit %d %q; qemu-img: exit %d %q", code, e, qcode, qe)
	}
}

// TestRebaseRawDataFile_LikeQemu: an image whose data file is raw takes
// no backing file: rebase, safe or -u, fails as qemu-img's does ("Could
// not change the backing file to 'B': Invalid argument") and leaves the
// header as it was. qimg wrote the backing file in, making an image
// QEMU considers invalid.
func TestRebaseRawDataFile_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	base := qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M")
	for _, mode := range [][]string{{"-u"}, nil} {
		for _, n := range []string{"ours", "theirs"} {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+filepath.Join(d, n+".data")+",data_file_raw=on", filepath.Join(d, n+".qcow2"), "1M")
		}
		args := append(append([]string{"rebase"}, mode...), "-b", base, "-F", "qcow2")
		_, e, code := runQ(t, append(args, filepath.Join(d, "ours.qcow2"))...)
		_, qe, qcode := testkit.Run(t, "qemu-img", append(args, filepath.Join(d, "theirs.qcow2"))...)
		if code != qcode || asQemu(e) != qe {
			t.Errorf("rebase %q: exit %d %q; qemu-img: exit %d %q", mode, code, e, qcode, qe)
		}
		if info := testkit.MustRun(t, "qemu-img", "info", filepath.Join(d, "ours.qcow2")); strings.Contains(info, "backing file") {
			t.Errorf("rebase %q wrote a backing file:\n%s", mode, info)
		}
	}
}
