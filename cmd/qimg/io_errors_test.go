package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestIOErrors_LikeQemu: a qemu-io command that fails prints what
// qemu-io prints, on the same stream, with its exit code: a request past
// the end ("read failed: Input/output error"), a number or pattern that
// does not parse, a compressed write qemu-io refuses, an unknown
// command, wrong argument counts, a pattern mismatch, a write to a
// read-only image, a truncate to an odd size. Before, qimg printed its
// own "qimg: io: CMD: ..." line on stderr for all of them.
func TestIOErrors_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, c := range []struct {
		cmd string
		ro  bool
	}{
		{cmd: "read 0 2M"}, {cmd: "write -P 1 1M 4k"}, {cmd: "write -z 0 2M"}, {cmd: "discard 0 2M"},
		{cmd: "read 0 abc"}, {cmd: "write 12Q 1"}, {cmd: "write -P 300 0 4k"}, {cmd: "write -c 0 4k"},
		{cmd: "frob 0 1"}, {cmd: "alloc"}, {cmd: "readv 0"}, {cmd: "read -P 0x5a 0 512"},
		{cmd: "write -u 0 64k"}, {cmd: "truncate 1000"}, {cmd: "sleep x"}, {cmd: "write 0 4k", ro: true},
	} {
		a, b := filepath.Join(d, "a.qcow2"), filepath.Join(d, "b.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", a, "1M")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "1M")
		args := []string{"-c", c.cmd}
		if c.ro {
			args = append(args, "-r")
		}
		o, e, code := runQ(t, append(append([]string{"io"}, args...), a)...)
		qo, qe, qcode := testkit.Run(t, "qemu-io", append(args, b)...)
		if code != qcode || normTiming(o) != normTiming(qo) || asQemuIO(e) != qe {
			t.Errorf("%q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", c.cmd, code, o, e, qcode, qo, qe)
		}
	}
}

// asQemuIO is qimg io's stderr as qemu-io's: "qimg: io: " is qemu-io's
// "qemu-io: ".
func asQemuIO(e string) string {
	if rest, ok := strings.CutPrefix(e, "qimg: io: "); ok {
		return "qemu-io: " + rest
	}
	return e
}
