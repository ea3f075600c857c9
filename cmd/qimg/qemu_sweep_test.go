package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMeasure_ImageOptsAndSnapshot: measure opens its input with
// --object and --image-opts as qemu-img does (qimg took the option
// string for a file name), and -l SNAPSHOT never measures the active
// layer in the snapshot's stead (qimg ignored -l and printed the active
// layer's numbers).
func TestMeasure_ImageOptsAndSnapshot(t *testing.T) {
	dir := qemuDir(t)
	sn := qemuImage(t, filepath.Join(dir, "sn.qcow2"), "qcow2", "64M", "write 0 1M")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", sn)
	qemuIO(t, sn, "qcow2", "write 8M 8M")
	args := []string{"measure", "-O", "qcow2", "-l", "s1", sn}
	theirs := testkit.MustRun(t, "qemu-img", args...)
	if ours, _, code := runQ(t, args...); code == 0 && ours != theirs {
		t.Errorf("%q: qimg printed other numbers than qemu-img:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
	}

	enc := filepath.Join(testkit.Dir(t), "enc.qcow2") // qemu-img check needs the key
	defer testkit.QemuCheckSecret(t, enc, "abc")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", secObj,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", enc, "4M")
	testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(enc), "-c", "write -P 1 0 1M")
	for _, args := range [][]string{
		{"measure", "-O", "qcow2", "--object", secObj, "--image-opts", imageOpts(enc)},
		{"measure", "--output=json", "--image-opts", imageOpts(enc), "--object", secObj, "-O", "raw"},
	} {
		if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
			t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
		}
	}
}
