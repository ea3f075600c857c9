package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// qimg bitmap against qemu-img bitmap: the same commands on two copies
// of an image, with writes between them (qemu-io on QEMU's copy, qimg io
// on ours), give the same exit codes and messages, the same bitmaps in
// qemu-img info, the same dirty maps through qemu-nbd, and an image
// qemu-img check passes.
func TestBitmap_LikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	t.Parallel()
	dir := workDir(t)
	theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
	src := filepath.Join(dir, "src.qcow2")
	for _, p := range []string{theirs, ours, src} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	}
	// A source image for --merge -b, with a bitmap QEMU dirtied.
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4k", src, "s")
	testkit.MustRun(t, "qemu-io", "-c", "write 6M 12k", "-f", "qcow2", src)
	const F = "FILE"
	steps := [][]string{
		{"--add", F, "a"},
		{"--add", F, "a"},
		{"--add", "-g", "4k", "--disable", F, "b"},
		{"write 1M 4k"},
		{"--remove", F, "nope"},
		{"--clear", "--enable", F, "nope"},
		{"--merge", "a", F, "b"},
		{"write 3M 64k"},
		{"--enable", F, "b"},
		{"write 5M 512"},
		{"--clear", F, "a"},
		{"write 9M 128k"},
		{"--add", "--disable", F, "c"},
		{"--merge", "s", "-b", src, "-F", "qcow2", F, "c"},
		{"--add", F, "d"},
		{"--remove", F, "d"},
		{"-g", "4k", "--remove", F, "a"},
		{"-b", src, "--add", F, "e"},
		{"--add", F},
		{F, "a"},
		{"--add", "-g", "1000", F, "x"},
		{"--disable", "--merge", "nope", F, "a"},
		{"write 15M 8k"},
	}
	for _, st := range steps {
		if w, ok := strings.CutPrefix(st[0], "write "); ok {
			testkit.MustRun(t, "qemu-io", "-c", "write "+w, "-f", "qcow2", theirs)
			mustQ(t, "io", "-c", "write "+w, ours)
			continue
		}
		args := func(p string) []string {
			a := append([]string{"bitmap"}, st...)
			for i := range a {
				if a[i] == F {
					a[i] = p
				}
			}
			return a
		}
		_, qerr, qcode := testkit.Run(t, "qemu-img", args(theirs)...)
		_, oerr, ocode := runQ(t, args(ours)...)
		qmsg := strings.ReplaceAll(strings.TrimPrefix(qerr, "qemu-img: "), theirs, F)
		omsg := strings.ReplaceAll(strings.TrimPrefix(oerr, "qimg: bitmap: "), ours, F)
		if qcode != ocode || qmsg != omsg {
			t.Errorf("bitmap %q:\nqemu-img: exit %d %q\nqimg:     exit %d %q", st, qcode, qmsg, ocode, omsg)
		}
	}
	testkit.QemuCheck(t, ours)
	spec := func(p string) string {
		_, after, _ := strings.Cut(testkit.MustRun(t, "qemu-img", "info", p), "Format specific information:")
		return after
	}
	if a, b := spec(theirs), spec(ours); a != b {
		t.Fatalf("qemu-img info:\nqemu-img bitmap:%s\nqimg bitmap:%s", a, b)
	}
	for _, n := range []string{"a", "b", "c"} {
		if a, b := testkit.DirtyMap(t, theirs, n), testkit.DirtyMap(t, ours, n); a != b {
			t.Errorf("bitmap %s:\nqemu-img:\n%s\nqimg:\n%s", n, a, b)
		}
	}
}

// amend keeps the bitmaps valid, as qemu-img amend does: a refcount
// width change rewrote the refcount structures and cleared the bitmaps'
// autoclear bit (qemu-img then warned that they are inconsistent, and
// their clusters leaked).
func TestAmend_KeepsBitmapsLikeQemu(t *testing.T) {
	testkit.NeedTools(t, "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
	t.Parallel()
	dir := workDir(t)
	for _, opts := range []string{"refcount_bits=8", "lazy_refcounts=on"} {
		theirs, ours := filepath.Join(dir, "theirs.qcow2"), filepath.Join(dir, "ours.qcow2")
		for _, p := range []string{theirs, ours} {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
			testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "4k", p, "b0")
			testkit.MustRun(t, "qemu-io", "-c", "write 1M 4k", "-c", "write 7M 64k", "-f", "qcow2", p)
		}
		testkit.MustRun(t, "qemu-img", "amend", "-o", opts, theirs)
		mustQ(t, "amend", "-o", opts, ours)
		testkit.QemuCheck(t, ours)
		if a, b := qemuBitmapsOf(t, theirs), qemuBitmapsOf(t, ours); a != b || !strings.Contains(b, "name: b0") {
			t.Errorf("%s: bitmaps:\nqemu-img's: %s\nqimg's:     %s", opts, a, b)
		}
		if a, b := testkit.DirtyMap(t, theirs, "b0"), testkit.DirtyMap(t, ours, "b0"); a != b {
			t.Errorf("%s: bitmap b0:\nqemu-img's:\n%s\nqimg's:\n%s", opts, a, b)
		}
	}
}

// TestBitmap_DefaultsAndBoundsLikeQemu: without -g (or with -g 0) a new
// bitmap's granularity is the cluster size within 4 KiB..64 KiB, as
// qemu-img's (qimg took 64 KiB always); a bitmap too large for QEMU to
// open the image with is refused, the image unchanged (qimg added it,
// and qemu-img could no longer open the image; review 53).
func TestBitmap_DefaultsAndBoundsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := workDir(t)
	gran := func(p string) string {
		out := testkit.MustRun(t, "qemu-img", "info", "--output=json", p)
		_, after, _ := strings.Cut(out, `"granularity": `)
		n, _, _ := strings.Cut(after, ",")
		return strings.TrimSpace(n)
	}
	for _, cs := range []string{"512", "4k", "16k", "2M"} {
		for _, g := range [][]string{nil, {"-g", "0"}} {
			var got [2]string
			for i, tool := range []string{"qemu-img", "qimg"} {
				p := filepath.Join(dir, tool+cs+".qcow2")
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, p, "64M")
				args := append(append([]string{"bitmap", "--add"}, g...), p, "b")
				if tool == "qemu-img" {
					testkit.MustRun(t, "qemu-img", args...)
				} else {
					mustQ(t, args...)
				}
				got[i] = gran(p)
			}
			if got[0] != got[1] {
				t.Errorf("cluster size %s, %v: granularity %s with qemu-img, %s with qimg", cs, g, got[0], got[1])
			}
		}
	}
	p := filepath.Join(dir, "big.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4T")
	_, errOut, code := runQ(t, "bitmap", "--add", "-g", "512", p, "big")
	if code != 1 || !strings.Contains(errOut, "Too much space will be occupied by the bitmap. Use larger granularity") {
		t.Errorf("a bitmap past QEMU's bounds: exit %d, %q", code, errOut)
	}
	if out := testkit.MustRun(t, "qemu-img", "info", p); strings.Contains(out, "name: big") {
		t.Errorf("the refused bitmap is in the image:\n%s", out)
	}
}
