package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// qemu-io's reopen: -r and -w switch the image read-only and back, -c
// its cache mode; bad arguments fail in qemu-io's words; a failed
// reopen keeps the image as it was (qimg io did not know the command).
func TestIOReopen_LikeQemu(t *testing.T) {
	base := qemuDir(t)
	for _, c := range [][]string{
		{"-c", "reopen -r", "-c", "write 0 512", "-c", "reopen -w", "-c", "write -P 3 0 512", "-c", "reopen -r -w",
			"-c", "reopen -c none", "-c", "read -P 3 0 512", "-c", "reopen -c bogus", "-c", "reopen x",
			"-c", "reopen -c writeback -r", "-c", "read -P 3 0 512", "-c", "write 0 512", "{d}/t.qcow2"},
		{"-r", "-c", "reopen", "-c", "write 0 512", "-c", "reopen -w", "-c", "write -P 4 4k 512", "-c", "read -P 4 4k 512", "{d}/t.qcow2"},
		{"-c", "close", "-c", "reopen", "{d}/t.qcow2"},
		{"-c", "reopen -c unsafe", "-c", "write -P 5 0 64k", "-c", "flush", "-c", "reopen -r", "-c", "read -P 5 0 64k", "{d}/t.qcow2"},
		{"-f", "raw", "-c", "reopen -r", "-c", "write 0 512", "-c", "reopen -w", "-c", "write -P 6 0 512", "{d}/t.raw"},
		// A probed raw image: its warning once, at the open.
		{"-c", "reopen -rr", "-c", "reopen -r", "-c", "reopen -w", "-c", "write -P 1 512 512", "{d}/t.raw"},
	} {
		q, o := runBoth(t, base, "qemu-io", "io", c, func(d string) {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, "t.qcow2"), "1M")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", filepath.Join(d, "t.raw"), "1M")
		})
		if !q.same(o) {
			t.Errorf("%q: qimg io %v\nqemu-io %v", c, q, o)
		}
		for _, f := range []string{"t.qcow2", "t.raw"} {
			if _, _, code := testkit.Run(t, "qemu-img", "compare", filepath.Join(q.dir, f), filepath.Join(o.dir, f)); code != 0 {
				t.Errorf("%q: %s differs from qemu-io's", c, f)
			}
		}
	}
}
