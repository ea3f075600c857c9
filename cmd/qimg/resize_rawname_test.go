package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestResize_RawNamesLikeQemu: a raw image named as file:NAME, by a
// json: spec or --image-opts is resized as qemu-img resizes it: qimg
// truncated the name as typed ("Could not resize file: No such file or
// directory") after the open had found the file. Output, exit code and
// the file are qemu-img's.
func TestResize_RawNamesLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	for i, args := range [][]string{
		{"file:{d}/b.raw", "+1M"},
		{`json:{"file":{"driver":"file","filename":"{d}/b.raw"}}`, "+1M"},
		{`json:{"driver":"raw","file":{"driver":"file","filename":"{d}/b.raw"}}`, "+1M"},
		{"--image-opts", "driver=raw,file.filename={d}/b.raw", "--shrink", "512K"},
		{"--image-opts", "file.filename={d}/b.raw", "+1M"},
	} {
		q, o := runBoth(t, base, "qemu-img", "resize", args, func(d string) {
			if err := os.WriteFile(filepath.Join(d, "b.raw"), make([]byte, 1<<20), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		same, err := sameFiles(q.dir, o.dir, "b.raw")
		if err != nil {
			t.Fatal(err)
		}
		if !q.same(o) || !same {
			t.Errorf("case %d %q:\nqimg %v\nqemu-img %v\nfiles equal: %v", i, args, q, o, same)
		}
	}
}

// TestResize_RawWindowsLikeQemu: a raw node's window (offset, size) is
// resized as QEMU's raw driver does: the file becomes offset plus the
// new size, and a window of a fixed size is refused. qimg failed with
// "No such file or directory" (the spec's name taken as a path).
func TestResize_RawWindowsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	for i, c := range []struct {
		size int
		args []string
	}{
		{1 << 20, []string{"--image-opts", "driver=raw,offset=4096,file.filename={d}/b.raw", "2M"}},
		{1 << 20, []string{"--shrink", "--image-opts", "driver=raw,offset=4096,file.filename={d}/b.raw", "512K"}},
		{1 << 20, []string{"--image-opts", "driver=raw,offset=4096,file.filename={d}/b.raw", "--", "-1M"}},
		{1 << 20, []string{`json:{"driver":"raw","offset":4096,"file":{"driver":"file","filename":"{d}/b.raw"}}`, "3M"}},
		{5000, []string{"--image-opts", "driver=raw,offset=4096,file.filename={d}/b.raw", "+1000"}},
		{5000, []string{"--preallocation=falloc", "--image-opts", "driver=raw,offset=4096,file.filename={d}/b.raw", "+1M"}},
		{5000, []string{"--preallocation=full", "--image-opts", "driver=raw,offset=4096,file.filename={d}/b.raw", "+1M"}},
		{4096, []string{"--image-opts", "driver=raw,offset=4096,file.filename={d}/b.raw", "1M"}}, // an empty window: no first block written
		{1 << 20, []string{"--image-opts", "driver=raw,offset=4096,size=65536,file.filename={d}/b.raw", "2M"}},
		{1 << 20, []string{"--image-opts", "driver=raw,size=65536,file.filename={d}/b.raw", "65536"}},
		{1 << 20, []string{"--preallocation=metadata", "--image-opts", "driver=raw,offset=4096,size=512,file.filename={d}/b.raw", "+1M"}},
	} {
		q, o := runBoth(t, base, "qemu-img", "resize", c.args, func(d string) {
			if err := os.WriteFile(filepath.Join(d, "b.raw"), make([]byte, c.size), 0o644); err != nil {
				t.Fatal(err)
			}
		})
		same, err := sameFiles(q.dir, o.dir, "b.raw")
		if err != nil {
			t.Fatal(err)
		}
		qa, oa := allocatedBytes(t, filepath.Join(q.dir, "b.raw")), allocatedBytes(t, filepath.Join(o.dir, "b.raw"))
		if !q.same(o) || !same || qa != oa {
			t.Errorf("case %d %q:\nqimg %v\nqemu-img %v\nfiles equal: %v, allocated %d and %d bytes", i, c.args, q, o, same, qa, oa)
		}
	}
}

// allocatedBytes is how much of the file at path the file system holds.
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// TestResize_RawOverQcow2LikeQemu: a raw node over a qcow2 image
// resizes that image, as QEMU's raw driver truncates its child. qimg
// truncated the qcow2 file itself: a shrink cut its clusters off
// (qemu-img check: "counting reference for region exceeding the end
// of the file").
func TestResize_RawOverQcow2LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	for i, args := range [][]string{
		{"--image-opts", "driver=raw,file.driver=qcow2,file.file.filename={d}/x.qcow2", "+1M"},
		{"--shrink", "--image-opts", "driver=raw,file.driver=qcow2,file.file.filename={d}/x.qcow2", "2M"},
		{"--image-opts", "driver=raw,offset=65536,file.driver=qcow2,file.file.filename={d}/x.qcow2", "+1M"},
		{"--image-opts", "driver=raw,file.driver=qcow2,file.file.filename={d}/x.qcow2", "+1000"},
		{"--image-opts", "driver=raw,size=1048576,file.driver=qcow2,file.file.filename={d}/x.qcow2", "+1M"},
		{"--shrink", "--image-opts", "driver=raw,offset=65536,file.driver=raw,file.offset=65536,file.file.driver=qcow2,file.file.file.filename={d}/x.qcow2", "2M"},
	} {
		q, o := runBoth(t, base, "qemu-img", "resize", args, func(d string) {
			img := filepath.Join(d, "x.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "4M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 7 0 3M", img)
		})
		if !q.same(o) {
			t.Errorf("case %d %q:\nqimg %v\nqemu-img %v", i, args, q, o)
		}
		qi, oi := filepath.Join(q.dir, "x.qcow2"), filepath.Join(o.dir, "x.qcow2")
		testkit.QemuCheck(t, qi)
		if out, errOut, code := testkit.Run(t, "qemu-img", "compare", "-s", qi, oi); code != 0 {
			t.Errorf("case %d %q: qemu-img compare: %s%s", i, args, out, errOut)
		}
	}
}
