package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
)

// TestCreate_FileHintsMatchQemu: create and convert take QEMU's file
// driver options nocow and extent_size_hint for every format, and set
// the extent size hint as qemu-img does, on XFS where it means
// something: 1 MiB by default (qimg set none, so its images were laid
// out differently from qemu-img's on XFS), none with 0, the size given,
// a warning where XFS refuses it, "too large" past 2^32-1 before
// anything is created; the data file gets it too. Output, exit code and
// each file's hint (xfs_io -c extsize) as qemu-img's.
func TestCreate_FileHintsMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	testkit.NeedTools(t, "xfs_io")
	d := looptest.XFSDir(t, 300<<20)
	extsize := func(p string) string {
		if _, err := os.Stat(p); err != nil {
			return "absent"
		}
		out := testkit.MustRun(t, "xfs_io", "-c", "extsize", p)
		v, _, _ := strings.Cut(out, " ")
		return v
	}
	opts := []string{"", "extent_size_hint=0", "extent_size_hint=64k", "extent_size_hint=5000",
		"extent_size_hint=2G", "extent_size_hint=4G", "extent_size_hint=abc", "nocow=on",
		"nocow=off,extent_size_hint=128k", "nocow=maybe", "preallocation=falloc,nocow=on,extent_size_hint=8k"}
	for _, f := range []string{"qcow2", "raw", "vmdk", "vpc"} {
		for i, o := range opts {

			ours, theirs := filepath.Join(d, fmt.Sprintf("q%d.%s", i, f)), filepath.Join(d, fmt.Sprintf("e%d.%s", i, f))
			args := []string{"create", "-f", f}
			if o != "" {
				args = append(args, "-o", o)
			}
			if f == "qcow2" && i%2 == 1 {
				// A data file, created with the same hints.
				sep := ","
				if o == "" {
					args, sep = append(args, "-o", ""), ""
				}
				args[len(args)-1] += sep + "data_file=" + ours + ".data"
			}
			out, errOut, code := runQ(t, append(args, ours, "1M")...)
			qargs := append([]string(nil), args...)
			qargs[len(qargs)-1] = strings.ReplaceAll(qargs[len(qargs)-1], ours, theirs)
			qout, qerr, qcode := testkit.Run(t, "qemu-img", append(qargs, theirs, "1M")...)
			qout = strings.ReplaceAll(qout, theirs, ours)
			qerr = strings.ReplaceAll(strings.ReplaceAll(qerr, theirs, ours), "qemu-img: ", "")
			errOut = strings.ReplaceAll(errOut, "qimg: create: ", "")
			// qimg says a message of several lines on one (as for every
			// size option): lines are compared as one.
			qerr, errOut = strings.ReplaceAll(qerr, "\n", "; "), strings.ReplaceAll(errOut, "\n", "; ")
			if out != qout || code != qcode || errOut != qerr {
				t.Errorf("%s -o %q: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", f, o, code, out, errOut, qcode, qout, qerr)
			}
			for _, suffix := range []string{"", ".data"} {
				if got, want := extsize(ours+suffix), extsize(theirs+suffix); got != want {
					t.Errorf("%s -o %q: %s extent size hint %s, qemu-img's %s", f, o, filepath.Base(ours+suffix), got, want)
				}
			}
		}
	}
	// convert -O takes them too.
	src := filepath.Join(d, "src.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", src, "1M")
	for _, o := range []string{"", "extent_size_hint=64k", "extent_size_hint=0", "nocow=on"} {
		for _, f := range []string{"qcow2", "raw"} {
			ours, theirs := filepath.Join(d, "cq."+f), filepath.Join(d, "ce."+f)
			args := []string{"convert", "-O", f}
			if o != "" {
				args = append(args, "-o", o)
			}
			if _, e, code := runQ(t, append(args, src, ours)...); code != 0 {
				t.Fatalf("convert -O %s -o %q: exit %d: %s", f, o, code, e)
			}
			testkit.MustRun(t, "qemu-img", append(args, src, theirs)...)
			if got, want := extsize(ours), extsize(theirs); got != want {
				t.Errorf("convert -O %s -o %q: extent size hint %s, qemu-img's %s", f, o, got, want)
			}
			os.Remove(ours)
			os.Remove(theirs)
		}
	}
}
