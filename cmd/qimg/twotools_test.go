package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// toolRun is what one tool did with a differential case: its output
// with the case directory written {d} (stdout's timings masked: qemu-io's
// and qemu-img bench's), its exit code, and the directory, for the files
// it left.
type toolRun struct {
	out, errOut string
	code        int
	dir         string
}

func (r toolRun) same(o toolRun) bool {
	return r.out == o.out && r.errOut == o.errOut && r.code == o.code
}

func (r toolRun) String() string {
	return fmt.Sprintf("(exit %d):\n%s%s", r.code, r.out, r.errOut)
}

// benchTiming is the time in qemu-img bench's last line.
var benchTiming = regexp.MustCompile(`(Run completed in )[0-9.]+( seconds)`)

// runBoth runs `qimg cmd args` and `tool args` (qemu-io, qemu-img...),
// each in a directory of its own under base with the same length of
// name (column widths agree), which setup fills first. Each {d} in args
// is that directory. qemu-img is given cmd too; qimg's "qimg: cmd: "
// prefix is written as the tool's.
func runBoth(t *testing.T, base, tool, cmd string, args []string, setup func(d string)) (q, o toolRun) {
	t.Helper()
	var runs [2]toolRun
	for k := range runs {
		d := filepath.Join(base, strings.Repeat("x", k+1))
		testkit.MustRun(t, "mkdir", "-p", d)
		setup(d)
		a := make([]string, len(args))
		for j, s := range args {
			a[j] = strings.ReplaceAll(s, "{d}", d)
		}
		var out, errOut string
		var code int
		if k == 0 {
			out, errOut, code = runQ(t, append([]string{cmd}, a...)...)
			errOut = strings.ReplaceAll(errOut, "qimg: "+cmd+": ", tool+": ")
		} else {
			if tool == "qemu-img" {
				a = append([]string{cmd}, a...)
			}
			out, errOut, code = testkit.Run(t, tool, a...)
		}
		r := strings.NewReplacer(d, "{d}")
		out = benchTiming.ReplaceAllString(normTiming(r.Replace(out)), "$1<t>$2")
		runs[k] = toolRun{out: out, errOut: r.Replace(errOut), code: code, dir: d}
	}
	return runs[0], runs[1]
}

// sameFiles reports whether the files named are the same bytes in
// directories a and b.
func sameFiles(a, b string, names ...string) (bool, error) {
	for _, n := range names {
		x, err := os.ReadFile(filepath.Join(a, n))
		if err != nil {
			return false, err
		}
		y, err := os.ReadFile(filepath.Join(b, n))
		if err != nil {
			return false, err
		}
		if !bytes.Equal(x, y) {
			return false, nil
		}
	}
	return true, nil
}

// qcow2Header is the first sector of a new 1 MiB qcow2 image that
// qemu-img creates in dir: bytes that make a raw file's first sector
// probe as qcow2.
func qcow2Header(t *testing.T, dir string) []byte {
	t.Helper()
	p := filepath.Join(dir, "hdr.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b[:512]
}
