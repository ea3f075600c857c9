package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommit_ProgressLikeQemu: commit -p prints qemu-img's progress
// lines: nothing when the image does not open; 0% once it is open (and
// a new line whatever happens next); 0% while the job scans; then the
// share of what lies above the base that has been copied (every layer
// above it with -b, a range counted once); 100% when done. How many
// lines qemu-img's mirror job prints between 0% and 100% depends on its
// timing, so repeated lines count once and each share qemu-img printed
// must be one qimg printed: the fixtures' ranges are of one size, so
// that any order in which the job's copies complete gives shares qimg
// prints too. qimg printed the share of the virtual size after each
// 1 MiB of it (only the top's with -b), and a new line on an image that
// did not open.
func TestCommit_ProgressLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	fix := testkit.Dir(t) // each run starts from copies of these
	f := func(n string) string { return filepath.Join(fix, n) }
	qemuImage(t, f("b.qcow2"), "qcow2", "16M", "write -P 1 0 16M")
	qemuOverlay(t, f("m.qcow2"), "b.qcow2", "qcow2", "write -P 2 1M 64k", "write -P 2 5M 64k")
	qemuOverlay(t, f("t.qcow2"), "m.qcow2", "qcow2", "write -P 3 0 64k", "write -P 3 9M 64k",
		"write -z 13M 64k", "write -P 3 15M 64k")
	for _, args := range [][]string{
		{"t.qcow2"},                  // into m: 4 ranges
		{"-b", "b.qcow2", "t.qcow2"}, // into b: 6 ranges
		{"-q", "t.qcow2"},            // nothing
		{"b.qcow2"},                  // no backing file: 0% and a new line
		{"-b", "nothere", "t.qcow2"}, // not in the chain: the same
		{"missing.qcow2"},            // does not open: nothing
		{"-b", "m.qcow2", "m.qcow2"}, // its own base: 0% and a new line
	} {
		var outs [2]string
		var codes [2]int
		for i, who := range []string{"qimg", "qemu-img"} {
			for _, n := range []string{"b.qcow2", "m.qcow2", "t.qcow2"} {
				if err := os.WriteFile(filepath.Join(dir, n), mustReadFile(t, f(n)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			a := append([]string{"commit", "-p"}, args...)
			a[len(a)-1] = filepath.Join(dir, a[len(a)-1])
			if who == "qimg" {
				outs[i], _, codes[i] = runQ(t, a...)
			} else {
				outs[i], _, codes[i] = testkit.Run(t, "qemu-img", a...)
			}
		}
		ours, theirs := progressSteps(outs[0]), progressSteps(outs[1])
		ok := codes[0] == codes[1] && len(ours) >= 2 == (len(theirs) >= 2)
		if ok && len(ours) >= 2 {
			ok = ours[0] == theirs[0] && ours[len(ours)-1] == theirs[len(theirs)-1]
			for _, s := range theirs[1 : len(theirs)-1] {
				ok = ok && slices.Contains(ours[1:len(ours)-1], s)
			}
		} else if ok {
			ok = outs[0] == outs[1]
		}
		if !ok {
			t.Errorf("commit -p %q:\nqimg (exit %d): %q\nqemu-img (exit %d): %q", args, codes[0],
				outs[0], codes[1], outs[1])
		}
	}
}

// progressSteps splits progress output at its carriage returns and
// drops repeated lines.
func progressSteps(out string) []string {
	if !strings.Contains(out, "\r") {
		return nil
	}
	return slices.Compact(strings.Split(out, "\r"))
}
