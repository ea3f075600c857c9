package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestSnapshot_RefcountOverflowLikeQemu: a snapshot the refcount width
// cannot count (1-bit refcounts: any; 2-bit: a fourth) fails in
// qemu-img's words and exit code (its -ERANGE as -EINVAL), the guest
// data unchanged and the image clean. qimg printed the engine's
// "unsupported feature: refcount overflow: cluster ...".
func TestSnapshot_RefcountOverflowLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, c := range []struct {
		bits  string
		first int // snapshots taken before the one that overflows
	}{{"1", 0}, {"2", 2}} {
		ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
		for _, p := range []string{ours, theirs} {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "refcount_bits="+c.bits, p, "1M")
			testkit.MustRun(t, "qemu-io", "-c", "write -P 7 0 64k", p)
		}
		for i := 0; i < c.first; i++ {
			testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s"+string(rune('a'+i)), theirs)
			mustQ(t, "snapshot", "-c", "s"+string(rune('a'+i)), ours)
		}
		_, e, code := runQ(t, "snapshot", "-c", "over", ours)
		_, qe, qcode := testkit.Run(t, "qemu-img", "snapshot", "-c", "over", theirs)
		if code != qcode || strings.Replace(e, "qimg: snapshot: ", "qemu-img: ", 1) != qe {
			t.Errorf("refcount_bits=%s: exit %d, %q; qemu-img: exit %d, %q", c.bits, code, e, qcode, qe)
		}
		testkit.MustRun(t, "qemu-img", "check", ours)
		testkit.MustRun(t, "qemu-io", "-c", "read -P 7 0 64k", ours)
	}
}
