package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestErrors_FormatsLikeQemu: a format name qemu-img does not know is
// refused with qemu-img's words and exit code wherever it names one (the
// image to write, a measure target, dd's output, -o help, a backing
// format); a format qemu-img knows and qimg does not write (vdi) is
// refused with exit 1, nothing created, in the words qemu-img refuses a
// format driver it cannot create images with. qimg said "unknown file
// format 'F' (qcow2, raw)" with a usage line (create -o help, convert
// -O vmdk, measure), "Unknown file format 'F' (qcow2, raw)" (dd) and
// "unknown backing format".
func TestErrors_FormatsLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	a := qemuImage(t, filepath.Join(dir, "a.qcow2"), "qcow2", "1M")
	n := filepath.Join(dir, "n.img")
	subst := func(c string) []string {
		args := strings.Fields(c)
		for i, w := range args {
			args[i] = strings.NewReplacer("$A", a, "$N", n).Replace(w)
		}
		return args
	}
	for _, c := range []string{
		"create -f bogus $N 1M", "create -f bogus -o help", "convert -O bogus $A $N", "convert -O bogus -o help",
		"measure -O bogus --size 1M", "dd -O bogus if=$A of=$N", "create -f qcow2 -b $A -F bogus $N",
		"info -f bogus $A",
		// qimg reads VMDK images: a qcow2 one given as vmdk is refused in
		// the vmdk driver's words.
		"info -f vmdk $A", "convert -f vmdk -O qcow2 $A $N", "create -f qcow2 -b $A -F vmdk $N", "create -f qcow2 -b $A -F vpc $N",
	} {
		args := subst(c)
		os.Remove(n)
		_, e, code := runQ(t, args...)
		os.Remove(n)
		_, qe, qcode := testkit.Run(t, "qemu-img", args...)
		os.Remove(n)
		if ours, theirs := ourMessage(e), qemuMessage(qe); ours != theirs || code != qcode {
			t.Errorf("%s:\nqimg exit %d: %s\nqemu-img exit %d: %s", c, code, ours, qcode, theirs)
		}
	}
	for c, want := range map[string]string{
		"create -f vdi $N 1M":             "$N: Format driver 'vdi' is not supported by qimg (qcow2, raw, vpc, vmdk, luks)",
		"create -f vdi -o help":           "Format driver 'vdi' is not supported by qimg (qcow2, raw, vpc, vmdk, luks)",
		"convert -O vdi $A $N":            "Format driver 'vdi' is not supported by qimg (qcow2, raw, vpc, vmdk, luks)",
		"dd -O vdi if=$A of=$N":           "Format driver 'vdi' is not supported by qimg (qcow2, raw, vpc, vmdk, luks)",
		"measure -O vdi --size 1M":        "Format driver 'vdi' is not supported by qimg (qcow2, raw)",
		"create -f qcow2 -b $A -F vdi $N": "$N: Driver 'vdi' is not supported by qimg (qcow2, raw, vpc, vmdk, luks); Could not open backing image.",
		"info -f vdi $A":                  "Could not open '$A': Driver 'vdi' is not supported by qimg (qcow2, raw, vpc, vmdk, luks)",
		"convert -f vdi -O qcow2 $A $N":   "Could not open '$A': Driver 'vdi' is not supported by qimg (qcow2, raw, vpc, vmdk, luks)",
		"amend -f vmdk -o size=2M $A":     "Format driver 'vmdk' does not support option amendment",
	} {
		os.Remove(n)
		_, e, code := runQ(t, subst(c)...)
		want = strings.NewReplacer("$A", a, "$N", n).Replace(want)
		if got := ourMessage(e); got != want || code != 1 {
			t.Errorf("%s: exit %d: %s\nwant exit 1: %s", c, code, got, want)
		}
		if _, err := os.Stat(n); err == nil {
			t.Errorf("%s: created %s", c, n)
		}
	}
}
