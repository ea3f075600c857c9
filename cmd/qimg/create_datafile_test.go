package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCreate_DataFileLikeQemu: create -o data_file=PATH (data_file_raw,
// preallocation) prints qemu-img 7.2's Formatting line and writes its
// image file byte for byte (the data file's name in its extension,
// incompatible bit 2, autoclear bit 1 when raw, every cluster linked in
// place when raw or preallocated), and a data file of the disk's size
// (full: allocated); QEMU checks the image and reads and writes it.
func TestCreate_DataFileLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	data := filepath.Join(dir, "d.raw")
	cases := []struct{ opts, size string }{
		{"", "1M"},
		{"data_file_raw=on", "1M"},
		{"data_file_raw=off,lazy_refcounts=on", "3M"},
		{"data_file_raw=on,cluster_size=4096", "100M"},
		{"preallocation=metadata", "1000448"},
		{"preallocation=full,cluster_size=512", "300k"},
		{"data_file_raw=on", "0"},
		// 512-byte clusters: an L2 table that reaches a range no
		// refcount block covers comes before the block QEMU then
		// places (qimg put the block first, from 8 MiB on).
		{"preallocation=metadata,cluster_size=512", "8M"},
		{"preallocation=falloc,cluster_size=512", "9000k"},
		{"preallocation=full,cluster_size=512", "64M"},
		{"data_file_raw=on,cluster_size=512", "20M"},
		{"data_file_raw=on,preallocation=falloc,cluster_size=512,refcount_bits=64", "3M"},
	}
	for _, c := range cases {
		opts := "data_file=" + data
		if c.opts != "" {
			opts += "," + c.opts
		}
		ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
		// A data file that is there already is emptied first.
		if err := os.WriteFile(data, []byte("old bytes"), 0o644); err != nil {
			t.Fatal(err)
		}
		out := mustQ(t, "create", "-f", "qcow2", "-o", opts, ours, c.size)
		testkit.MustRun(t, "qemu-img", "check", ours)
		if a, b := qimgAndQemu(t, "info", ours); a != b {
			t.Errorf("%s: info:\nqimg:\n%s\nqemu-img:\n%s", opts, a, b)
		}
		io := []string{"-c", "write -P 0x11 4k 70k", "-c", "read -P 0x11 4k 70k", "-c", "read -P 0 0 4k"}
		if c.size == "0" {
			io = []string{"-c", "read 0 0"}
		}
		testkit.MustRun(t, "qemu-io", append(io, ours)...)
		os.Remove(ours)
		oursData, err := os.ReadFile(data)
		if err != nil {
			t.Fatal(err)
		}
		mustQ(t, "create", "-q", "-f", "qcow2", "-o", opts, ours, c.size)
		os.Remove(data)
		qout := testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", opts, theirs, c.size)
		if want := strings.ReplaceAll(qout, theirs, ours); out != want {
			t.Errorf("%s: qimg said\n%s\nqemu-img said\n%s", opts, out, want)
		}
		a, _ := os.ReadFile(ours)
		b, _ := os.ReadFile(theirs)
		if !bytes.Equal(a, b) {
			t.Errorf("%s %s: image files differ (%d and %d bytes; first difference at %d)", opts, c.size, len(a), len(b), testkit.FirstDiff(a, b))
		}
		fi, err := os.Stat(data)
		if err != nil || fi.Size() != int64(len(oursData)) {
			t.Errorf("%s: data file %d bytes, QEMU's %v %v", opts, len(oursData), fi, err)
		}
		testkit.MustRun(t, "qemu-io", append(io[:2], theirs)...)
		if !bytes.Equal(oursData, mustRead(t, data)) {
			t.Errorf("%s: the data file after the same write differs from QEMU's", opts)
		}
		os.Remove(ours)
		os.Remove(theirs)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCreate_DataFileErrorsLikeQemu: what QEMU 7.2 refuses of data_file
// and data_file_raw is refused after the same Formatting line, in its
// words, and leaves no image.
func TestCreate_DataFileErrorsLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	base := filepath.Join(dir, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	img := filepath.Join(dir, "x.qcow2")
	data := filepath.Join(dir, "x.raw")
	for _, args := range [][]string{
		{"-o", "data_file_raw=on", img, "1M"},
		{"-o", "data_file=" + data + ",compat=0.10", img, "1M"},
		{"-o", "data_file=" + data + ",data_file_raw=on", "-b", base, "-F", "qcow2", img, "1M"},
		{"-o", "data_file=", img, "1M"},
		{"-o", "data_file=" + filepath.Join(dir, "no", "x.raw"), img, "1M"},
	} {
		a := append([]string{"create", "-f", "qcow2"}, args...)
		out, stderr, code := runQ(t, a...)
		qout, qstderr, qcode := testkit.Run(t, "qemu-img", a...)
		want := strings.TrimPrefix(strings.TrimSpace(qstderr), "qemu-img: ")
		if code == 0 || qcode == 0 || out != qout || !strings.HasSuffix(strings.TrimSpace(stderr), want) {
			t.Errorf("%q: qimg exit %d %q %q; qemu-img exit %d %q %q", args, code, out, stderr, qcode, qout, qstderr)
		}
		if _, err := os.Stat(img); err == nil {
			t.Errorf("%q: an image was left", args)
			os.Remove(img)
		}
	}
}

// TestCreate_FormattingOrderLikeQemu: compat comes before the backing
// file in qemu-img 7.2's Formatting line, and data_file and
// data_file_raw (printed when given) after the backing format. qimg
// printed compat after backing_fmt.
func TestCreate_FormattingOrderLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	base := filepath.Join(dir, "base.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M")
	img := filepath.Join(dir, "x.qcow2")
	for _, o := range []string{"compat=1.1", "compat=1.1,data_file=" + filepath.Join(dir, "x.raw") + ",data_file_raw=off"} {
		args := []string{"create", "-f", "qcow2", "-o", o, "-b", base, "-F", "qcow2", img}
		ours := mustQ(t, args...)
		theirs := testkit.MustRun(t, "qemu-img", args...)
		if ours != theirs {
			t.Errorf("%s:\nqimg:     %sqemu-img: %s", o, ours, theirs)
		}
	}
}
