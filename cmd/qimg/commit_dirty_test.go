package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestCommitDirtyTopRepairs: qemu-img commit opens the top image
// read-write whatever its options (-d, -b), so a top left dirty (lazy
// refcounts) is repaired on open, with its lines on stderr, and is
// clean afterwards. qimg commit -d and -b opened the top read-only only:
// no lines, and the top stayed dirty.
func TestCommitDirtyTopRepairs(t *testing.T) {
	d := qemuDir(t)
	t.Chdir(d)
	for _, args := range [][]string{{"-d", "Pt.qcow2"}, {"-b", "Pb.qcow2", "Pt.qcow2"}} {
		for _, p := range []string{"q", "e"} {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p+"b.qcow2", "4M")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", p+"b.qcow2", p+"m.qcow2")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "-F", "qcow2", "-b", p+"m.qcow2", p+"t.qcow2")
			testkit.Run(t, "qemu-io", "-c", "write -P 5 0 1M", "-c", "abort", p+"t.qcow2") // a crash
		}
		sub := func(p string) []string {
			out := make([]string, len(args))
			for i, a := range args {
				out[i] = strings.ReplaceAll(a, "P", p)
			}
			return out
		}
		_, oerr, code := runQ(t, append([]string{"commit"}, sub("q")...)...)
		_, terr, qcode := testkit.Run(t, "qemu-img", append([]string{"commit"}, sub("e")...)...)
		if code != 0 || qcode != 0 || oerr != terr || !strings.Contains(oerr, "Rebuilding refcount structure") {
			t.Errorf("commit %q: exit %d, qemu-img's %d\nours:\n%s\nqemu-img's:\n%s", args, code, qcode, oerr, terr)
		}
		if _, _, c := testkit.Run(t, "qemu-img", "check", "-q", filepath.Join(d, "qt.qcow2")); c != 0 {
			t.Errorf("commit %q: the top is left dirty (check exit %d)", args, c)
		}
		testkit.MustRun(t, "qemu-img", "compare", "-q", "qb.qcow2", "eb.qcow2")
		testkit.MustRun(t, "qemu-img", "compare", "-q", "qt.qcow2", "et.qcow2")
	}
}
