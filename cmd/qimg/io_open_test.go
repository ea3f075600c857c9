package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestIOOpen_LikeQemu: qemu-io's open and close (and their aliases o
// and c): a session may start without an image, open one with its own
// flags (-r, -s, -C, -n, -t, -d, -i, -U) or image options (-o, or the
// argument itself under --image-opts), and close it; a command that
// needs an image says "no file open". qimg io refused to start without
// an image and knew neither command. Each case runs in two directories
// with the same images, through qimg and qemu-io: output, errors and
// exit codes identical (the directory and the timings aside).
func TestIOOpen_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	base := testkit.Dir(t)
	for i, args := range [][]string{
		{"-c", "read 0 1"},
		{"-c", "open {d}/p.qcow2", "-c", "read 0 512", "-c", "close", "-c", "read 0 1", "-c", "open -r {d}/p2.qcow2",
			"-c", "write 0 1", "-c", "read -P 7 0 64k", "-c", "info"},
		{"-c", "open -o driver=raw {d}/p.qcow2", "-c", "info", "-c", "close", "-c", "close"},
		{"-c", "open"},
		{"-c", "open -x {d}/p.qcow2"},
		{"-c", "open a b"},
		{"-c", "open -o driver=qcow2,file.filename={d}/p.qcow2", "-c", "read 0 1"},
		{"-c", "open {d}/nosuch.qcow2", "-c", "read 0 1"},
		{"-f", "raw", "-c", "open {d}/p.qcow2", "-c", "info"}, // -f is not open's
		{"{d}/p.qcow2", "-c", "close", "-c", "open -s {d}/p2.qcow2", "-c", "write 0 1", "-c", "read -P 0 0 1"},
		{"-c", "open -U {d}/p.qcow2"},
		{"-c", "open -r -U {d}/p.qcow2", "-c", "read 0 1"},
		{"-c", "sleep 1", "-c", "help close", "-c", "length"},
		{"-c", "c"},
		{"-c", "o {d}/p.qcow2", "-c", "length", "-c", "c", "-c", "length"},
		{"-c", "open -i io_uring {d}/p.qcow2", "-c", "length"},
		{"-c", "open -t bogus {d}/p.qcow2"},
		{"-c", "open -d bogus {d}/p.qcow2"},
		{"--image-opts", "-c", "open -o driver=raw {d}/p.qcow2"},
		{"--image-opts", "-c", "open driver=raw,file.filename={d}/p.qcow2", "-c", "info"},
		{"-c", "open -o driver=raw"},
		{"-c", "open -r"},
		{"-c", "open -s -C"},
		{"-c", "open -o driver=raw,file.filename={d}/p.qcow2 {d}/p.qcow2"},
		{"-c", "open -o foo=bar {d}/p.qcow2"},
		{"-c", "open -r -s {d}/p.qcow2", "-c", "write 0 1"},
		{"{d}/p.qcow2", "-c", "open {d}/p2.qcow2"},
		{"-c", "open -n -t writeback -d ignore {d}/p2.qcow2", "-c", "discard 0 64k", "-c", "read -P 7 0 64k", "-c", "map"},
		{"-c", "open -C {d}/p.qcow2", "-c", "info"},
		{"-c", "open -o driver=qcow2 {d}/p.qcow2", "-c", "write -P 3 0 4k", "-c", "close", "-c", "open {d}/p.qcow2", "-c", "read -P 3 0 4k"},
		{"-c", "open -o l2-cache-size=1M {d}/p.qcow2", "-c", "info"},
		// file.* keys other than file.filename apply to the named file;
		// a file: name; a bare filename at the root is refused (qimg
		// opened a qcow2 file as raw there: a write broke its header).
		{"-c", "open -o file.locking=off {d}/p.qcow2", "-c", "read -q 0 512"},
		{"-c", "open -o file=foo {d}/p.qcow2"},
		{"-c", "open -o l2-cache-size=1M file:{d}/p.qcow2", "-c", "length"},
		{"-c", "open -o filename={d}/p.qcow2", "-c", "write 0 512"},
		{"--image-opts", "filename={d}/p.qcow2", "-c", "write 0 512"},
		{"json:{\"filename\": \"{d}/p.qcow2\"}", "-c", "write 0 512"},
		// The command line's open fails in the same words.
		{"{d}/nosuch.qcow2", "-c", "read 0 1"},
		{"--image-opts", "driver=raw,file.filename={d}/nosuch", "-c", "read 0 1"},
		{"-c", "open -o driver=raw,file.filename={d}/nosuch"},
		{"-c", "open -o driver=qcow2,file.filename={d}/p.qcow2,foo=bar"},
		// read-only=on in a writable open's options; options over a
		// json: name merge with it (the options' keys win).
		{"-c", "open -o read-only=on {d}/p.qcow2"},
		{"-c", "open -o read-only=yes -r {d}/p2.qcow2", "-c", "read -P 7 0 4k"},
		{"--image-opts", "driver=qcow2,read-only=on,file.filename={d}/p.qcow2", "-c", "info"},
		{"-c", `open -o driver=raw json:{"driver":"qcow2","file":{"driver":"file","filename":"{d}/p2.qcow2"}}`, "-c", "info"},
		{"-c", `open -o file.filename={d}/p2.qcow2 json:{"driver":"qcow2"}`, "-c", "read -P 7 0 4k"},
	} {
		q, o := runBoth(t, base, "qemu-io", "io", args, func(d string) {
			for _, p := range []string{"p", "p2"} {
				testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(d, p+".qcow2"), "1M")
			}
			testkit.MustRun(t, "qemu-io", "-c", "write -P 7 0 64k", filepath.Join(d, "p2.qcow2"))
		})
		if !q.same(o) {
			t.Errorf("case %d %q:\nqimg %v\nqemu-io %v", i, args, q, o)
		}
	}
}
