package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestNumArgs_HugeMatchQemu: dd's bs=, count=, skip= and convert's -S
// read as qemu-img's cvtnum_full, any size up to INT64_MAX before their
// own ranges ("Must be between 1 and 2147483647", "Valid sizes are
// multiples of 512", a count past the input copying all of it, a skip
// past it "cannot skip"): qimg refused anything past 2^62 as not a size.
func TestNumArgs_HugeMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	in := filepath.Join(d, "in.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", in, "1M")
	testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 4k 8k", in)
	var cases [][]string
	for _, a := range []string{"bs=4611686018427388416", "bs=9223372036854775807", "count=4611686018427388416",
		"skip=4611686018427388416", "count=9223372036854775808", "count=16E", "count=9223372036854775807 bs=2147483647",
		"skip=9223372036854775807 bs=2147483647", "skip=4294967296 bs=2147483647"} {
		cases = append(cases, append([]string{"dd", "-O", "raw", "if=" + in, "of=OUT"}, strings.Fields(a)...))
	}
	for _, s := range []string{"4611686018427388416", "9223372036854775807", "9223372036854775808", "16E", "1M"} {
		cases = append(cases, []string{"convert", "-O", "raw", "-S", s, in, "OUT"})
	}
	for _, c := range cases {
		run := func(out string) []string {
			a := make([]string, len(c))
			for i, s := range c {
				a[i] = strings.ReplaceAll(s, "OUT", out)
			}
			return a
		}
		ours, theirs := filepath.Join(d, "q.raw"), filepath.Join(d, "e.raw")
		out, errOut, code := runQ(t, run(ours)...)
		qout, qerr, qcode := testkit.Run(t, "qemu-img", run(theirs)...)
		errOut = strings.ReplaceAll(errLine(errOut, "qimg: "+c[0]+": "), ours, "OUT")
		qerr = strings.ReplaceAll(errLine(qerr, "qemu-img: "), theirs, "OUT")
		if out != qout || errOut != qerr || code != qcode {
			t.Errorf("%q: qimg exit %d %s%s\nqemu-img exit %d %s%s", c, code, out, errOut, qcode, qout, qerr)
		}
		a, aerr := os.ReadFile(ours)
		b, berr := os.ReadFile(theirs)
		if (aerr == nil) != (berr == nil) || !bytes.Equal(a, b) {
			t.Errorf("%q: qimg's output (%v, %d bytes) is not qemu-img's (%v, %d bytes)", c, aerr, len(a), berr, len(b))
		}
		os.Remove(ours)
		os.Remove(theirs)
	}
}

// TestNumArgs_HugeSizesMatchQemu: measure --size, convert -r and bitmap
// -g past 2^62, as qemu-img's cvtnum reads them (to INT64_MAX): measure
// says qcow2's "too large" and a raw target's size in QEMU's uint64
// (human) and int64 (JSON); a huge rate limit is no limit; a granularity
// past INT64_MAX is out of range. qimg refused them all as not sizes.
func TestNumArgs_HugeSizesMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t)
	in := filepath.Join(d, "in.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", in, "1M")
	var cases [][]string
	for _, s := range []string{"4611686018427388416", "9223372036854775296", "9223372036854775807", "9223372036854775808"} {
		for _, f := range []string{"qcow2", "raw"} {
			for _, o := range []string{"human", "json"} {
				cases = append(cases, []string{"measure", "-O", f, "--output=" + o, "--size", s})
			}
		}
		cases = append(cases, []string{"convert", "-r", s, "-O", "raw", in, "OUT"})
	}
	cases = append(cases, []string{"bitmap", "--add", "-g", "9223372036854775808", "BM", "b0"})
	for _, c := range cases {
		ours, theirs := filepath.Join(d, "q.img"), filepath.Join(d, "e.img")
		for _, p := range []string{ours, theirs} {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p+".bm", "1M")
		}
		run := func(out string) []string {
			a := make([]string, len(c))
			for i, s := range c {
				a[i] = strings.ReplaceAll(strings.ReplaceAll(s, "OUT", out), "BM", out+".bm")
			}
			return a
		}
		out, errOut, code := runQ(t, run(ours)...)
		qout, qerr, qcode := testkit.Run(t, "qemu-img", run(theirs)...)
		errOut = strings.ReplaceAll(strings.Replace(errOut, "qimg: "+c[0]+": ", "", 1), ours, "OUT")
		qerr = strings.ReplaceAll(strings.Replace(qerr, "qemu-img: ", "", 1), theirs, "OUT")
		if out != qout || errOut != qerr || code != qcode {
			t.Errorf("%q: qimg exit %d %s%s\nqemu-img exit %d %s%s", c, code, out, errOut, qcode, qout, qerr)
		}
		os.Remove(ours)
		os.Remove(theirs)
	}
}

// errLine is a tool's stderr as qimg prints an error: one line, its lines
// joined with "; ", each without prefix (qemu-img's "qemu-img: " or
// qimg's "qimg: CMD: ").
func errLine(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, prefix)
	}
	return strings.Join(lines, "; ")
}
