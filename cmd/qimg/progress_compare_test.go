package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCompare_ProgressStepsLikeQemu: compare -p prints qemu-img's
// progress lines step for step: after each chunk of the walk (what the
// block status of both images gives at its start, cut to 2 MiB unless
// both read as zeros) the chunk's share of the larger size, a line when
// that moved by more than 2%, none for the chunk where a mismatch lies;
// the size mismatch warning between the common part and the rest. qimg
// printed 0% and, if identical, 100%.
func TestCompare_ProgressStepsLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	p := func(n string) string { return filepath.Join(dir, n) }
	a := qemuImage(t, p("a.qcow2"), "qcow2", "16M",
		"write -P 1 0 1M", "write -P 2 5M 64k", "write -z 7M 1M", "write -P 3 10M 3M")
	qemuImage(t, p("b.qcow2"), "qcow2", "16M",
		"write -P 1 0 1M", "write -P 2 5M 64k", "write -z 7M 1M", "write -P 3 10M 3M", "write -P 9 12M 512")
	qemuImage(t, p("c.qcow2"), "qcow2", "24M", "write -P 1 0 1M", "write -P 2 5M 64k", "write -P 3 10M 3M")
	qemuImage(t, p("d.qcow2"), "qcow2", "24M", "write -P 1 0 1M", "write -P 2 5M 64k", "write -P 3 10M 3M",
		"write -P 5 22M 4k")
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", a, p("a.raw"))
	for _, args := range [][]string{
		{"a.qcow2", "a.qcow2"},
		{"a.qcow2", "b.qcow2"},       // content mismatch
		{"a.qcow2", "c.qcow2"},       // larger, zeros after
		{"d.qcow2", "a.qcow2"},       // larger, data after
		{"-s", "a.qcow2", "c.qcow2"}, // strict: sizes
		{"-s", "a.qcow2", "a.raw"},   // strict: block status
		{"a.raw", "d.qcow2"},
	} {
		for i := range args {
			if strings.Contains(args[i], ".") {
				args[i] = p(args[i])
			}
		}
		args = append([]string{"compare", "-p"}, args...)
		ours, _, code := runQ(t, args...)
		theirs, _, qcode := testkit.Run(t, "qemu-img", args...)
		if ours != theirs || code != qcode {
			t.Errorf("%q:\nqimg (exit %d): %q\nqemu-img (exit %d): %q", args[2:], code, ours, qcode, theirs)
		}
	}
}
