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
	t.Parallel()
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

// TestRebase_ProgressLikeQemu: rebase -p prints qemu-img's progress
// lines: 0% once the command line is read (then a new line whatever
// happens), 100 / (size / 2 MiB) percent more after each stretch of up
// to 2 MiB that the image leaves to its backing file (cut where its
// allocation changes or a backing file ends), a line when that moved on
// by more than 2%, never past 100%, and 100% when rebased (with -u too).
// qimg printed the share of the virtual size after each 1 MiB, in steps
// of 1%, and nothing on an error.
func TestRebase_ProgressLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	fix := testkit.Dir(t)                               // each run starts from copies of these
	for _, size := range []string{"5M", "7M", "128M"} { // 128M: steps of 1.5625%, one line in two
		qemuImage(t, filepath.Join(fix, "b.qcow2"), "qcow2", size, "write -P 1 0 1M", "write -P 2 3M 1M")
		qemuOverlay(t, filepath.Join(fix, "t.qcow2"), "b.qcow2", "qcow2", "write -P 3 512k 1M", "write -z 4M 64k")
		qemuImage(t, filepath.Join(fix, "n.qcow2"), "qcow2", "3M", "write -P 5 0 2M")
		for _, extra := range [][]string{nil, {"-u"}, {"-b", "missing.qcow2"}} {
			var outs [2]string
			var codes [2]int
			for i, who := range []string{"qimg", "qemu-img"} {
				for _, f := range []string{"b.qcow2", "t.qcow2", "n.qcow2"} {
					if err := os.WriteFile(filepath.Join(dir, f), mustReadFile(t, filepath.Join(fix, f)), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				args := append([]string{"rebase", "-p", "-F", "qcow2", "-b", "n.qcow2"}, extra...)
				args = append(args, filepath.Join(dir, "t.qcow2"))
				if who == "qimg" {
					outs[i], _, codes[i] = runQ(t, args...)
				} else {
					outs[i], _, codes[i] = testkit.Run(t, "qemu-img", args...)
				}
			}
			if outs[0] != outs[1] || codes[0] != codes[1] {
				t.Errorf("%s %q:\nqimg (exit %d): %s\nqemu-img (exit %d): %s", size, extra, codes[0],
					strings.ReplaceAll(outs[0], "\r", " "), codes[1], strings.ReplaceAll(outs[1], "\r", " "))
			}
		}
	}
}
