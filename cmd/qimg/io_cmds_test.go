package main

import (
	"fmt"
	"github.com/qring/qring/internal/testkit"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// timing matches qemu-io's statistics line; its rates vary run to run.
var timing = regexp.MustCompile(`(?m)^(.*), ([0-9]+) ops; .*$`)

func normTiming(s string) string { return timing.ReplaceAllString(s, "$1, $2 ops; <timing>") }

// ioArgs turns command lines into -c arguments.
func ioArgs(cmds []string) []string { return flagArgs("-c", cmds) }

// flagArgs puts flag before each of vals: -c CMD -c CMD, -o OPTS...
func flagArgs(flag string, vals []string) []string {
	var a []string
	for _, v := range vals {
		a = append(a, flag, v)
	}
	return a
}

// TestIOCommandsMatchQemu runs the same qemu-io command lists with
// qemu-io and qimg io on copies of one image: same stdout (timings
// aside), same exit status, and the same image afterwards.
func TestIOCommandsMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	lists := [][]string{
		{"writev -P 5 0 4k 8k", "readv -P 5 0 4k 8k", "readv -v 0 32 16", "writev 1M 512 1k 512", "readv -P 0xcd 1M 2k",
			"writev -q -P 1 3M 512", "readv -q -P 1 3M 512"},
		{"aio_write -P 7 64k 4k", "aio_flush", "aio_read -P 7 64k 4k", "aio_flush", "aio_write -z 128k 64k", "aio_flush",
			"aio_read -P 0 128k 64k", "aio_flush", "aio_write -P 9 200k 1k 3k", "aio_flush", "aio_read -v 200k 16", "aio_flush"},
		{"write -P 1 0 128k", "length", "alloc 0 64k", "alloc 0 128k", "alloc 1M", "alloc 64k 1", "alloc 100", "alloc 0 1G",
			"alloc 8M", "write -z 2M 64k", "alloc 2M 128k"},
		{"write -P 2 0 4M", "truncate 8M", "length", "read -P 0 4M 4M", "truncate 2M", "length", "read -P 2 0 2M",
			// After a shrink and a regrow QEMU leaves the regrown range
			// unallocated, qimg as zero clusters (qcow2.Image.Shrink):
			// the same zeros, a different alloc count past 2M.
			"truncate 3M", "read -P 0 2M 1M", "alloc 0 2M", "sleep 10", "length"},
		// Compressed writes: whole clusters, several at once, zeros
		// (-z wins over -c), a compressed cluster of zeros.
		{"write -c 0 64k", "write -c -P 3 128k 192k", "write -c -z 512k 64k", "write -c -P 0 960k 64k",
			"read -P 3 128k 192k", "read -P 0 960k 64k", "alloc 0 4M", "map"},
		// A refused (allocated) cluster does not stop the clusters
		// already in flight: QEMU writes them as parallel tasks (8 at
		// most; none started after the error) and reports the error.
		{"write -P 1 64k 64k", "write -c -P 2 0 192k", "read -P 2 0 64k", "read -P 2 128k 64k", "map"},
		{"help", "help length", "help readv"},
		{"readv -P 9 0 512"},
		{"help nosuch"},
		{"sleep x"},
		{"truncate 1000"},
	}
	for i, l := range lists {
		a, b := filepath.Join(d, "a.qcow2"), filepath.Join(d, "b.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", a, "4M")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "4M")
		o1, e1, c1 := runQ(t, append(append([]string{"io"}, ioArgs(l)...), a)...)
		o2, e2, c2 := testkit.Run(t, "qemu-io", append(ioArgs(l), b)...)
		if l[0] == "help" {
			// qimg lists the commands it runs, qemu-io all of its own.
			if !subsequence(strings.Split(o1, "\n"), strings.Split(o2, "\n")) {
				t.Errorf("help: qimg's lines are not qemu-io's:\n%s\nqemu-io:\n%s", o1, o2)
			}
		} else if normTiming(o1) != normTiming(o2) || c1 != c2 {
			t.Errorf("list %d %q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", i, l, c1, o1, e1, c2, o2, e2)
		}
		testkit.MustRun(t, "qemu-img", "compare", a, b)
		testkit.MustRun(t, "qemu-img", "check", a)
	}
	// A compressed write that qemu-io refuses fails in qimg too: not on
	// a cluster boundary, not a whole cluster, over an allocated one.
	for _, c := range []string{"write -c 4k 64k", "write -c 128k 4k", "write -c 0 128k"} {
		a := filepath.Join(d, "a.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", a, "4M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 1 64k 4k", a)
		_, e1, c1 := runQ(t, "io", "-c", c, a)
		_, _, c2 := testkit.Run(t, "qemu-io", "-c", c, a)
		if c1 != c2 || c1 == 0 {
			t.Errorf("%q: qimg exit %d %q, qemu-io exit %d", c, c1, e1, c2)
		}
		// The allocated cluster keeps its data (a cluster before it may
		// have been written, by both tools).
		if out := testkit.MustRun(t, "qemu-io", "-c", "read -P 1 64k 4k", a); strings.Contains(out, "fail") {
			t.Errorf("%q changed the data:\n%s", c, out)
		}
	}
	// Argument counts are refused as qemu-io refuses them.
	for _, c := range []string{"alloc", "truncate", "length 5", "sleep", "readv 0", "writev 0", "aio_flush 1", "help a b"} {
		a := filepath.Join(d, "a.qcow2")
		_, e1, c1 := runQ(t, "io", "-c", c, a)
		_, e2, c2 := testkit.Run(t, "qemu-io", "-c", c, a)
		if c1 != c2 || !strings.Contains(e1, strings.TrimSpace(e2)) {
			t.Errorf("%q: qimg exit %d %q, qemu-io exit %d %q", c, c1, e1, c2, e2)
		}
	}
}

// subsequence reports whether every element of a appears in b, in order.
func subsequence(a, b []string) bool {
	j := 0
	for _, x := range a {
		for j < len(b) && b[j] != x {
			j++
		}
		if j == len(b) {
			return false
		}
		j++
	}
	return true
}

// TestIOCommandsInterop: qimg's vectored and aio writes read back in
// QEMU, QEMU's in qimg, on qcow2 over a backing file and on raw.
func TestIOCommandsInterop(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	p := func(n string) string { return filepath.Join(d, n) }
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("b.qcow2"), "4M")
	qio(t, p("b.qcow2"), "write -P 1 0 4M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", p("o.qcow2"))
	qimgIO(t, p("o.qcow2"), "writev -P 2 1000 3000 5000", "aio_write -P 3 1M 64k", "aio_write -z 2M 64k", "aio_flush")
	qio(t, p("o.qcow2"), "read -P 1 0 1000", "read -P 2 1000 8000", "read -P 1 9000 1039576",
		"read -P 3 1M 64k", "read -P 1 1088k 960k", "read -P 0 2M 64k", "read -P 1 2112k 1984k")
	qio(t, p("o.qcow2"), "writev -P 4 3M 4k 4k")
	out := qimgIO(t, p("o.qcow2"), "readv -P 4 3M 4k 4k", "aio_read -P 3 1M 64k", "alloc 3M 64k", "alloc 0 4M")
	if !strings.Contains(out, "65536/65536 bytes allocated at offset 3 MiB") ||
		!strings.Contains(out, "262144/4194304 bytes allocated at offset 0 bytes") {
		t.Errorf("alloc:\n%s", out)
	}
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", p("r.raw"), "1M")
	mustQ(t, "io", "-f", "raw", "-c", "writev -P 6 0 4k 4k", "-c", "truncate 2M", "-c", "length", p("r.raw"))
	testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "read -P 6 0 8k", "-c", "read -P 0 8k 2040k", p("r.raw"))
	if o := qimgIO(t, p("r.raw"), "length"); o != "2 MiB\n" {
		t.Errorf("raw length %q", o)
	}
}

// TestCmdOpts_Unsupported: an io command refuses the qemu-io options qring
// does not support with one line naming all of them, whichever was given.
func TestCmdOpts_Unsupported(t *testing.T) {
	for _, tc := range []struct {
		args        []string
		shorts      string
		unsupported []string
		want        string
	}{
		{[]string{"-n", "0", "4k"}, "P:zuqCcn", []string{"c (compressed)", "n"}, "-c (compressed) and -n are not supported"},
		{[]string{"-i", "0", "4k"}, "P:vqCi", []string{"C", "i"}, "-C and -i are not supported"},
		{[]string{"-C", "0", "4k"}, "P:qCf", []string{"C", "f"}, "-C and -f are not supported"},
		{[]string{"-f", "0", "4k"}, "P:qCfiuz", []string{"C", "f", "i"}, "-C, -f and -i are not supported"},
		{[]string{"-z", "0", "4k"}, "P:qCfiuz", []string{"C", "f", "i"}, ""},
	} {
		_, err := cmdOpts(tc.args, tc.shorts, tc.unsupported...)
		if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
			t.Errorf("cmdOpts(%q, %q, %q) = %v, want %q", tc.args, tc.shorts, tc.unsupported, err, tc.want)
		}
	}
}

// TestIO_MapOverlayLikeQemu: io's map counts only what the image itself
// allocates, as qemu-io's does (qimg counted what its backing file held
// too; found by a differential fuzz).
func TestIO_MapOverlayLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	b, o := filepath.Join(d, "b.qcow2"), filepath.Join(d, "o.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", b, "1M")
	qio(t, b, "write -P 1 0 512k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", o)
	qio(t, o, "write -P 2 0 64k", "write -z 128k 64k")
	if got, want := qimgIO(t, o, "map"), qio(t, o, "map"); got != want {
		t.Errorf("map:\n%s\nqemu-io:\n%s", got, want)
	}
}
