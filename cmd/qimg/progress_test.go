package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_ProgressLikeQemu: convert -p prints qemu-img's progress
// lines, step for step: 0% first, then before each chunk it copies the
// share of what it will copy (a first walk counts it; zeros left out and
// what the output's backing file holds do not count), a line when that
// moved on by more than 1%, and 100% at the end, twice when the last
// chunk got there; -q silences it. qimg counted the whole virtual size,
// after each chunk and zeros too, printed steps of 1% or more, no 0%, and
// printed with -q.
func TestConvert_ProgressLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "16M",
		"write -P 1 0 1M", "write -P 2 3M 3M", "write -z 8M 1M", "write -P 3 10M 64k", "write -P 4 12M 4k")
	top := qemuOverlay(t, filepath.Join(dir, "top.qcow2"), "src.qcow2", "qcow2", "write -P 5 4M 1M", "write -z 14M 64k")
	empty := qemuImage(t, filepath.Join(dir, "empty.qcow2"), "qcow2", "4M")
	raw := qemuImage(t, filepath.Join(dir, "src.raw"), "raw", "8M", "write -P 6 1M 3M", "write -P 7 7M 4k")
	out := filepath.Join(dir, "out")
	for _, args := range [][]string{
		{"-O", "qcow2", src},
		{"-O", "raw", src},
		{"-O", "qcow2", "-c", src},
		{"-O", "qcow2", "-S", "0", src},
		{"-O", "qcow2", "-c", "-S", "0", src},
		{"-O", "raw", "-S", "64k", src},
		{"-O", "qcow2", "-C", src},
		{"-q", "-O", "qcow2", src},
		{"-O", "qcow2", top},
		{"-O", "qcow2", "-B", "src.qcow2", "-F", "qcow2", top},
		{"-O", "qcow2", empty},
		{"-O", "qcow2", raw},
		{"-O", "raw", "-c", src},                             // fails: no 100%
		{"-O", "qcow2", filepath.Join(dir, "missing.qcow2")}, // 0% and the new line
		{"-T", "bogus", "-O", "qcow2", src},                  // nothing: refused before
	} {
		args = append(append([]string{"convert", "-p"}, args...), out)
		os.Remove(out)
		ours, e, code := runQ(t, args...)
		os.Remove(out)
		theirs, qe, qcode := testkit.Run(t, "qemu-img", args...)
		os.Remove(out)
		if ours != theirs || code != qcode {
			t.Errorf("%q:\nqimg (exit %d %q):\n%s\nqemu-img (exit %d %q):\n%s", args, code, e, strings.ReplaceAll(ours, "\r", "\n"),
				qcode, qe, strings.ReplaceAll(theirs, "\r", "\n"))
		}
	}
}
