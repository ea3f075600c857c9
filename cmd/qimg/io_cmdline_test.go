package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// machineTiming matches -C's line (bytes,ops,time,bytes/s,ops/s); all
// but the counts vary run to run.
var machineTiming = regexp.MustCompile(`(?m)^([0-9]+,[0-9]+),.*$`)

// TestIOCommandLines_LikeQemu: qimg io reads a command line as qemu-io
// 7.2 does, on qcow2, raw, vpc and vmdk images (monolithicSparse and
// streamOptimized, whose written grain refuses a partial write with EIO
// and QEMU's line on stderr, as QEMU asks that first): the argument count first
// (options included; "bad argument count" on stderr), then the options
// (glibc getopt's "read: invalid option -- 'x'" on stderr and the usage
// line on stdout), then the arguments after them (the usage line
// alone), each command's own checks in qemu-io's order; the one-letter
// names (r, w, d, f, i, l, a, t, q, ?); quit; -C's machine-readable
// line; write -f, -s and -p, write -c's sector alignment (a VMDK's write
// -c as a plain write, as QEMU's vmdk), discard -C, read -s/-l, truncate -m (vpc and
// vmdk: the block layer's "does not support resize" first); info of
// raw, vpc and vmdk images. qimg printed its getopt's "unrecognized option" and its
// own argument messages, took map, info and flush with any arguments,
// refused -C, -f, -s and -p, and verified all of a read under -P -s -l.
// Where a command writes, qemu-img compare finds the two images equal.
// Not compared: write -b and read -b (the VM state, which qring's qcow2
// does not keep: ENOTSUP, as QEMU's raw), truncate -m off without an
// offset (qemu-io 7.2 crashes; qimg prints the usage), aio_write -z's
// timing (qemu-io 7.2 times it from an unset start), help's long text
// for one command (qimg prints its usage line only).
func TestIOCommandLines_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	src10 := filepath.Join(d, "src10")
	if err := os.WriteFile(src10, []byte("abcdefghij"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(d, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cmds := []string{
		"read -x 0 512", "read --foo 0 512", "read -P", "read -P 1", "read -v 0", "read 0", "read 0 512 1024",
		"read -Px 0 512", "read 0 512 -v", "r -x 0 512", "r 0",
		"read -P 7 -s 0 -l 512 0 4k", "read -P 7 -s 512 -l 512 0 128k", "read -P 0 -s 65536 -l 512 0 128k",
		"read -P 7 -s 4k 0 8k", "read -P 7 -l 4k 0 8k", "read -s 4k 0 8k", "read -P 7 -s 8k -l 4k 0 8k",
		"read -P 7 -s 4k -l 8k 0 8k", "read -P 7 -s x 0 8k", "read -P 7 -s x -l y 0 8k", "read -l 4k -P 7 0 8k",
		"read -P 300 0", "read -C 0 512", "read -q -C 0 512",
		"write -y 0 512", "write -P", "write -P 1 0", "write -s", "w 0", "w -x 0 4k", "w -P 7 0 4k",
		"write -f 0 512", "write -p 0 512", "write -z -f 0 4k", "write -c -f 0 64k", "write -c 1000 24", "write -c 0 1000", "w -c 1000 512", "write -c -P 5 512 512", "write -C 0 512", "write -C -q 0 512",
		"write -n -u 0 512", "write -u -n 0 512", "write -z -P 1 0 512", "write -c -z 0 64k", "write -P 300 0",
		"write -s SRC10 0 512", "write -s SRC10 0 33", "write -s SRC10 -c 0 64k", "write -c -s SRC10 0 128k",
		"write -s SRC10 -P 3 0 512", "write -s NOSUCH 0 512", "write -s EMPTY 0 512", "write -s DIR 0 512",
		"discard -z 0 512", "discard 0", "d 0", "discard -C 0 64k", "discard -Cq 0 64k",
		"map -q", "map 0", "info -x", "flush -x", "length -a", "i", "f", "l", "a 0", "alloc -x 0", "alloc 0 512 1",
		"readv -Z 0 512", "readv 0", "readv -i 0 512", "readv -C 0 512", "readv -P 7 0 4k 4k",
		"writev -x 0 512", "writev -f 0 512", "writev -C -f 0 512",
		"aio_read -x 0 512", "aio_write -x 0 512", "aio_write -C 0 512", "aio_write -f 0 512", "aio_write -z 0", "aio_write -z 0 512 512", "aio_write -u 0 512", "aio_flush x",
		"truncate -q 1M", "truncate -m", "truncate -m foo 1M", "truncate -m falloc 2M", "truncate -m full 2M",
		"truncate -m metadata 2M", "truncate -m falloc 512k", "truncate -m off 512k", "truncate 1M 2M", "t 2M",
		"sleep", "sleep x", "help -x", "help read write", "help nosuch", "help quit", "? quit", "quit", "q", "quit x",
	}
	for _, ff := range []struct{ f, sub string }{{"qcow2", ""}, {"raw", ""}, {"vpc", ""}, {"vmdk", ""}, {"vmdk", "streamOptimized"}} {
		f := ff.f
		tmpl := filepath.Join(d, "tmpl."+f)
		create := []string{"create", "-q", "-f", f, tmpl, "1M"}
		if ff.sub != "" {
			create = append(create, "-o", "subformat="+ff.sub)
		}
		testkit.MustRun(t, "qemu-img", create...)
		qio(t, tmpl, "write -P 7 0 64k")
		b, err := os.ReadFile(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			if w, _, _ := strings.Cut(c, " "); f != "qcow2" && f != "raw" && !slices.Contains([]string{"truncate", "t", "info", "i", "write", "w"}, w) {
				continue // the parsing is the same for every format: only what the driver answers
			}
			c = strings.NewReplacer("SRC10", src10, "NOSUCH", filepath.Join(d, "nosuch"), "EMPTY", empty, "DIR", d).Replace(c)
			ours, theirs := filepath.Join(d, "ours."+f), filepath.Join(d, "theirs."+f)
			for _, p := range []string{ours, theirs} {
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"-f", f, "-c", c}
			if c[0] == 'q' {
				args = append(args, "-c", "length") // not run
			}
			o, e, code := runQLocked(t, append(append([]string{"io"}, args...), ours)...) // its subject is not locking
			qo, qe, qcode := testkit.Run(t, "qemu-io", append(args, theirs)...)
			norm := func(s string) string {
				s = strings.NewReplacer(ours, "IMG", theirs, "IMG").Replace(s) // a VMDK's info names its file
				return machineTiming.ReplaceAllString(normTiming(s), "$1,<timing>")
			}
			if code != qcode || norm(o) != norm(qo) || asQemuIO(e) != qe {
				t.Errorf("%s %s: %q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", f, ff.sub, c, code, o, e, qcode, qo, qe)
				continue
			}
			if code == 0 && strings.ContainsAny(c[:1], "wt") {
				testkit.MustRun(t, "qemu-img", "compare", "-q", "-f", f, "-F", f, ours, theirs)
			}
		}
	}
}

// TestIOOptions_DiscardAndAioLikeQemu: qimg io's -d is qemu-io's (ignore
// or off: discard does nothing, while write -z -u still unmaps; unmap or
// on, the default; anything else "Invalid discard option"), and an
// unknown -i is "Invalid aio option" before the image opens. qimg took
// -d and ignored it.
func TestIOOptions_DiscardAndAioLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	tmpl := filepath.Join(d, "tmpl.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "1M")
	qio(t, tmpl, "write -P 1 0 128k")
	b, err := os.ReadFile(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range [][]string{{"-d", "ignore"}, {"-d", "off"}, {"-d", "on"}, {"-d", "unmap"}, {"-d", "foo"}, {"-i", "foo"}, {"-i", "threads"}, nil} {
		ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
		for _, p := range []string{ours, theirs} {
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		args := append([]string{"-f", "qcow2"}, opt...)
		args = append(args, "-c", "discard 0 64k", "-c", "read -P 1 0 64k", "-c", "write -z -u 64k 64k", "-c", "map")
		o, e, code := runQ(t, append(append([]string{"io"}, args...), ours)...)
		qo, qe, qcode := testkit.Run(t, "qemu-io", append(args, theirs)...)
		if code != qcode || normTiming(o) != normTiming(qo) || asQemuIO(e) != qe {
			t.Errorf("%q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", opt, code, o, e, qcode, qo, qe)
			continue
		}
		// The same clusters discarded and unmapped as qemu-io's.
		om := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours)
		if qm := testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs); om != qm {
			t.Errorf("%q: map\n%s\nqemu-io's image:\n%s", opt, om, qm)
		}
	}
}
