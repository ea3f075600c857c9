package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
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

// TestIOErrors_LengthLimitLikeQemu: a request longer than qemu-io's
// largest (BDRV_REQUEST_MAX_BYTES, 2147483136) is refused in its words:
// read and discard "length cannot exceed", write (and -z, -c) "... without
// -n", a vector "Argument ... exceeds" or "The total number of bytes";
// write -z -n and aio_write -z have no limit, and -n wants -z. qimg
// wrote 3 GiB in 1 MiB pieces where qemu-io refuses, and refused -n.
func TestIOErrors_LengthLimitLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, c := range []string{
		"read 0 3G", "read -v 0 2G", "write 0 3G", "write -z 0 2G", "write -c 0 3G", "discard 0 3G",
		"aio_read 0 3G", "readv 0 1G 1G 1G", "writev 0 3G", "write -n 0 4k", "write -z -n 0 3G",
		"aio_write -z 0 3G", "write -z -n 0 64k", "write -z -n -u 64k 3G",
	} {
		a, b := filepath.Join(d, "a.qcow2"), filepath.Join(d, "b.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", a, "8G")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "8G")
		o, e, code := runQ(t, "io", "-c", c, a)
		qo, qe, qcode := testkit.Run(t, "qemu-io", "-c", c, b)
		if code != qcode || normTiming(o) != normTiming(qo) || asQemuIO(e) != qe {
			t.Errorf("%q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", c, code, o, e, qcode, qo, qe)
		}
		if out := testkit.MustRun(t, "qemu-img", "compare", a, b); !strings.Contains(out, "identical") {
			t.Errorf("%q: %s", c, out)
		}
	}
}

// TestIOErrors_HugeArgsLikeQemu: offsets, lengths and truncate sizes past
// 2^62 as qemu-io reads them (cvtnum: up to INT64_MAX, then "Parsing
// error: argument too large"): requests past the end fail with EIO, a
// truncate past BDRV_MAX_LENGTH is its block layer's "offset(N) exceeds
// maximum(M)", a raw file's truncate error in strerror's words. qimg
// said "non-numeric argument" for all of them. And aio_read's failed
// request says readv, as qemu-io 7.2's, and neither aio command's failed
// request sets the exit code (qemu-io reports it on completion).
func TestIOErrors_HugeArgsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := looptest.Ext4Dir(t, 64<<20)
	for _, f := range []string{"qcow2", "raw"} {
		for _, c := range []string{
			"read 4611686018427388416 512", "write 9223372036854775296 512", "write 9223372036854775807 512",
			"read 9223372036854775807 1", "truncate 4611686018427388416", "truncate 9223372036854775296",
			"truncate 9223372036854775807", "read 0 4611686018427388416", "read 9223372036854775808 512",
			"read 0 16E", "readv 9223372036854775296 512 512", "writev 9223372036854775807 512",
			"alloc 9223372036854775807 9223372036854775807", "write -z 9223372036854775296 512",
			"discard 9223372036854775296 512", "aio_read 9223372036854775296 512", "aio_read 2M 512",
			"aio_write 2M 512", "aio_write 0 abc",
		} {
			a, b := filepath.Join(d, "a.img"), filepath.Join(d, "b.img")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", f, a, "1M")
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", f, b, "1M")
			o, e, code := runQ(t, "io", "-f", f, "-c", c, a)
			qo, qe, qcode := testkit.Run(t, "qemu-io", "-f", f, "-c", c, b)
			if code != qcode || normTiming(o) != normTiming(qo) || asQemuIO(e) != qe {
				t.Errorf("%s %q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", f, c, code, o, e, qcode, qo, qe)
			}
		}
	}
}
