package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// TestCreate_HugeSizesMatchQemu: sizes past the engine's 2^62 that
// qemu-img create takes (the size argument up to INT64_MAX, -o size= up
// to 2^64-1, negative in QEMU's int64 from 2^63 on) are refused by each
// format in qemu-img's words after the Formatting line, with the same
// file left behind: qimg said "Invalid image size specified. Must be
// between 0 and 9223372036854775807." for all of them (and refused -o
// size= past 2^62 as not a size). A negative -o size= that rounds up to
// 0 makes an empty image, as qemu-img's. Fractions are read through a
// double as qemu_strtosz does ("7.999E": qimg was 1 byte larger).
// vmdk, where qemu-img writes an image it cannot open, is refused in
// qimg's words (checked separately).
func TestCreate_HugeSizesMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := looptest.Ext4Dir(t, 64<<20)
	sizes := []string{
		"4611686018427387904", "4611686018427387905", "1E", "7.999E", "9223372035781033984",
		"9223372035781034000", "9223372035781034496", "9223372036854775295", "9223372036854775296",
		"9223372036854775297", "9223372036854775807", "9223372036854775808", "8E", "1.001k", "3.3M",
	}
	var cases [][]string
	for _, f := range []string{"qcow2", "raw", "vpc"} {
		for _, s := range sizes {
			cases = append(cases, []string{"-f", f, "SIZE", s})
		}
		for _, s := range append(sizes, "18446744073709551614", "18446744073709551104", "18446744073709551615",
			"18446744073709551616", "16E", "15.9E") {
			cases = append(cases, []string{"-f", f, "-o", "size=" + s})
		}
	}
	cases = append(cases, []string{"-f", "qcow2", "-o", "cluster_size=2M", "SIZE", "3E"},
		[]string{"-f", "qcow2", "-o", "preallocation=full", "SIZE", "9223372036854775807"},
		[]string{"-f", "raw", "-o", "preallocation=falloc,size=9223372036854775808"})
	state := func(p string) string {
		st, err := os.Stat(p)
		if err != nil {
			return "absent"
		}
		return "a file of " + strconv.FormatInt(st.Size(), 10)
	}
	for _, c := range cases {
		ours, theirs := filepath.Join(d, "q.img"), filepath.Join(d, "e.img")
		args := func(path string) []string {
			a := []string{"create"}
			var size string
			for i := 0; i < len(c); i++ {
				if c[i] == "SIZE" {
					size = c[i+1]
					i++
					continue
				}
				a = append(a, c[i])
			}
			a = append(a, path)
			if size != "" {
				a = append(a, size)
			}
			return a
		}
		// One after the other, each file removed before the next tool
		// runs: the small file system holds one image at a time.
		qout, qerr, qcode := testkit.Run(t, "qemu-img", args(theirs)...)
		want := state(theirs)
		os.Remove(theirs)
		out, errOut, code := runQ(t, args(ours)...)
		qout = strings.ReplaceAll(qout, theirs, ours)
		qerr = strings.ReplaceAll(strings.ReplaceAll(qerr, theirs, ours), "qemu-img: ", "")
		errOut = strings.ReplaceAll(errOut, "qimg: create: ", "")
		if out != qout || code != qcode || errOut != qerr {
			t.Errorf("%q: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", c, code, out, errOut, qcode, qout, qerr)
		}
		if got := state(ours); got != want {
			t.Errorf("%q: qimg left %s, qemu-img %s", c, got, want)
		}
		if code == 0 && c[1] == "qcow2" {
			testkit.QemuCheck(t, ours)
		}
		os.Remove(ours)
	}
	// vmdk: refused, nothing left but the emptied file qemu-img leaves.
	for _, a := range [][]string{{"create", "-f", "vmdk", filepath.Join(d, "v.vmdk"), "9223372036854775807"},
		{"create", "-f", "vmdk", "-o", "size=18446744073709551614", filepath.Join(d, "v.vmdk")}} {
		if _, errOut, code := runQ(t, a...); code != 1 || !strings.Contains(errOut, "vmdk: a size of") {
			t.Errorf("%q: exit %d, %q; want qimg's vmdk refusal", a, code, errOut)
		}
	}
}
