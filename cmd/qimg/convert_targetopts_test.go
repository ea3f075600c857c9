package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_TargetImageOptsLikeQemu: --target-image-opts takes the
// output of convert -n as an option string (driver=...,file.filename=...),
// as qemu-img 7.2 does: written as with a file name and -O, for a qcow2
// and a raw output, with --image-opts inputs too. Without -n, with -O,
// for an output that cannot be opened or that is the input, qimg fails
// as qemu-img fails (exit code and message; qimg refuses the input as
// output itself, where QEMU fails to take its lock).
func TestConvert_TargetImageOptsLikeQemu(t *testing.T) {
	t.Parallel()
	d := qemuDir(t)
	src := qemuImage(t, filepath.Join(d, "src.qcow2"), "qcow2", "2M", "write -P 1 0 64k", "write -z 128k 64k",
		"write -P 2 1M 100k")
	for _, fmt := range []string{"qcow2", "raw"} {
		ours := qemuImage(t, filepath.Join(d, "ours."+fmt), fmt, "4M", "write -P 0xaa 0 4M")
		theirs := qemuImage(t, filepath.Join(d, "theirs."+fmt), fmt, "4M", "write -P 0xaa 0 4M")
		mustQ(t, "convert", "-n", "--target-image-opts", src, "driver="+fmt+",file.filename="+ours)
		testkit.MustRun(t, "qemu-img", "convert", "-n", "--target-image-opts", src, "driver="+fmt+",file.filename="+theirs)
		sameImages(t, "-O "+fmt, fmt, ours, theirs)
	}
	// Both sides as option strings.
	ours := qemuImage(t, filepath.Join(d, "both-ours.raw"), "raw", "2M")
	theirs := qemuImage(t, filepath.Join(d, "both-theirs.raw"), "raw", "2M")
	in := "driver=qcow2,file.filename=" + src
	mustQ(t, "convert", "-n", "--image-opts", "--target-image-opts", in, "driver=raw,file.filename="+ours)
	testkit.MustRun(t, "qemu-img", "convert", "-n", "--image-opts", "--target-image-opts", in, "driver=raw,file.filename="+theirs)
	sameImages(t, "--image-opts", "raw", ours, theirs)

	missing := filepath.Join(d, "missing")
	for _, args := range [][]string{
		{"--target-image-opts", src, "driver=raw,file.filename=" + ours},
		{"-n", "--target-image-opts", "-O", "raw", src, "driver=raw,file.filename=" + ours},
		{"-n", "--target-image-opts", "-O", "vmdk", src, "driver=raw,file.filename=" + ours},
		{"-n", "--target-image-opts", src, "driver=qcow2,file.filename=" + missing},
		{"--image-opts", "-f", "qcow2", in, missing},
		{"--image-opts", "driver=qcow2,file.filename=" + missing, ours},
		{"-C", "--salvage", src, missing},
	} {
		what := strings.Join(args, " ")
		_, e, code := runQ(t, append([]string{"convert"}, args...)...)
		_, qe, qcode := testkit.Run(t, "qemu-img", append([]string{"convert"}, args...)...)
		if code != qcode || ourMessage(e) != qemuMessage(qe) {
			t.Errorf("%s: exit %d %q; qemu-img: exit %d %q", what, code, ourMessage(e), qcode, qemuMessage(qe))
		}
		if _, err := os.Stat(missing); err == nil {
			t.Fatalf("%s: created %s", what, missing)
		}
	}
	before := testkit.MustRun(t, "qemu-img", "map", "--output=json", src)
	_, e, code := runQ(t, "convert", "-n", "--target-image-opts", src, "driver=qcow2,file.filename="+src)
	if code != 1 || !strings.Contains(e, "refusing to overwrite") {
		t.Errorf("the input as output: exit %d %q", code, e)
	}
	if after := testkit.MustRun(t, "qemu-img", "map", "--output=json", src); after != before {
		t.Errorf("the input changed:\n%s\nwas\n%s", after, before)
	}
}
