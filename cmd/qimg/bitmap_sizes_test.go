package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// resize of an image with persistent bitmaps: qemu-img resizes them
// (the same info, exit and output as qimg), and refuses, with its
// message, while one is inconsistent (IN_USE).
func TestResize_BitmapsLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	var files []string
	for _, who := range []string{"ours", "theirs"} {
		p := filepath.Join(dir, who+".qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4k", p, "b0")
		qemuIO(t, p, "qcow2", "write -P 1 1M 4k")
		files = append(files, p)
	}
	for _, args := range [][]string{{"resize", "-f", "qcow2"}, {"resize", "--shrink", "-f", "qcow2"}} {
		size := "12M"
		if args[1] == "--shrink" {
			size = "2M"
		}
		o, e, code := runQ(t, append(args, files[0], size)...)
		q, qe, qcode := testkit.Run(t, "qemu-img", append(args, files[1], size)...)
		if o != q || e != qe || code != qcode {
			t.Fatalf("%v %s: qimg exit %d %q %q; qemu-img exit %d %q %q", args, size, code, o, e, qcode, q, qe)
		}
		a := testkit.MustRun(t, "qemu-img", "info", "--output=json", files[0])
		b := testkit.MustRun(t, "qemu-img", "info", "--output=json", files[1])
		if bitmapsOf(a) != bitmapsOf(b) || !strings.Contains(a, `"name": "b0"`) || strings.Contains(a, "in-use") {
			t.Fatalf("after %v: qimg's info\n%s\nqemu-img's\n%s", args, a, b)
		}
	}
	for _, p := range files {
		leaveInUse(t, p)
	}
	_, e, code := runQ(t, "resize", "-f", "qcow2", files[0], "8M")
	_, qe, qcode := testkit.Run(t, "qemu-img", "resize", "-f", "qcow2", files[1], "8M")
	if ourMessage(e) != qemuMessage(qe) || code != qcode {
		t.Errorf("inconsistent bitmap: qimg exit %d %q; qemu-img exit %d %q", code, e, qcode, qe)
	}
}

// bitmapsOf is the bitmaps list of qemu-img info's JSON.
func bitmapsOf(info string) string {
	var v struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps json.RawMessage `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if json.Unmarshal([]byte(info), &v) != nil {
		return "unparsable: " + info
	}
	return string(v.FormatSpecific.Data.Bitmaps)
}

// bitmap --merge from an image of another disk size is refused as
// qemu-img refuses it (granules of other sizes merge); before, qimg
// merged what fitted.
func TestBitmap_MergeOtherSizeLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	src := filepath.Join(dir, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "8M")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4k", src, "s")
	var files []string
	for _, who := range []string{"ours", "theirs"} {
		p := filepath.Join(dir, who+".qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
		testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "d")
		files = append(files, p)
	}
	args := []string{"bitmap", "--merge", "s", "-b", src, "-F", "qcow2"}
	o, e, code := runQ(t, append(args, files[0], "d")...)
	q, qe, qcode := testkit.Run(t, "qemu-img", append(args, files[1], "d")...)
	if o != q || ourMessage(e) != qemuMessage(qe) || code != qcode || code == 0 {
		t.Errorf("qimg exit %d %q %q; qemu-img exit %d %q %q", code, o, e, qcode, q, qe)
	}
}
