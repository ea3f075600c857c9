package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// TestResize_HugeSizesMatchQemu: qemu-img resize and amend -o size= with
// sizes past 2^62: past BDRV_MAX_LENGTH QEMU's block layer refuses the
// truncate before any driver ("offset(N) exceeds maximum(M)"; qimg said
// the L1 table's EFBIG, or vpc's "does not support resize"), amend takes
// -o size= up to 2^64-1 as an int64 ("Image size cannot be negative";
// qimg refused anything past 2^62 as not a size), and a raw file's
// errno is capitalized as strerror's ("File too large"). Output, exit
// code and the image's virtual size as qemu-img's.
func TestResize_HugeSizesMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := looptest.Ext4Dir(t, 64<<20)
	sizes := []string{"4611686018427387904", "4611686018427387905", "4611686018427388416", "9223372035781033984",
		"9223372035781034496", "9223372036854775296", "9223372036854775297", "9223372036854775807"}
	var cases [][]string
	for _, f := range []string{"qcow2", "raw", "vpc"} {
		for _, s := range sizes {
			cases = append(cases, []string{f, "resize", "-f", f, "IMG", s})
		}
	}
	cases = append(cases, []string{"raw", "resize", "-f", "raw", "--preallocation=falloc", "IMG", "4611686018427387904"})
	for _, s := range append(sizes, "9223372036854775808", "18446744073709551104", "18446744073709551615", "16E", "abc") {
		cases = append(cases, []string{"qcow2", "amend", "-o", "size=" + s, "IMG"})
	}
	for _, c := range cases {
		img := filepath.Join(d, "i.img")
		run := func(tool string) (string, string, int, string) {
			os.Remove(img)
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", c[0], img, "1M")
			args := make([]string, 0, len(c)-1)
			for _, a := range c[1:] {
				if a == "IMG" {
					a = img
				}
				args = append(args, a)
			}
			var out, errOut string
			var code int
			if tool == "qimg" {
				out, errOut, code = runQ(t, args...)
				errOut = errLine(errOut, "qimg: "+c[1]+": ")
			} else {
				out, errOut, code = testkit.Run(t, "qemu-img", args...)
				errOut = errLine(errOut, "qemu-img: ")
			}
			info, _, _ := testkit.Run(t, "qemu-img", "info", "-f", c[0], img)
			return out, errOut, code, strings.SplitN(strings.SplitN(info, "virtual size:", 2)[1], "\n", 2)[0]
		}
		qout, qerr, qcode, qsize := run("qemu-img")
		out, errOut, code, size := run("qimg")
		if out != qout || errOut != qerr || code != qcode || size != qsize {
			t.Errorf("%q: qimg exit %d %s%s, size%s\nqemu-img exit %d %s%s, size%s", c, code, out, errOut, size, qcode, qout, qerr, qsize)
		}
	}
}
