package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_FilePreallocLikeQemu: convert -O vmdk|vpc takes the file
// driver's -o preallocation as create does, with qemu-img's refusals
// (qimg refused the option as the format's), and the output reads as
// qemu-img's.
func TestConvert_FilePreallocLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "4M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 5 1M 64k", src)
	for _, f := range []string{"vmdk", "vpc"} {
		for _, pa := range []string{"full", "falloc", "off", "metadata", "bogus"} {
			theirs, ours := filepath.Join(d, "theirs."+f), filepath.Join(d, "ours."+f)
			os.Remove(theirs)
			os.Remove(ours)
			_, qe, qcode := testkit.Run(t, "qemu-img", "convert", "-O", f, "-o", "preallocation="+pa, src, theirs)
			_, oe, ocode := runQ(t, "convert", "-O", f, "-o", "preallocation="+pa, src, ours)
			qm := strings.ReplaceAll(strings.TrimPrefix(qe, "qemu-img: "), theirs, ours)
			if qcode != ocode || strings.TrimPrefix(oe, "qimg: convert: ") != qm {
				t.Errorf("%s %s: qimg exit %d %q, qemu-img exit %d %q", f, pa, ocode, oe, qcode, qe)
				continue
			}
			if qcode == 0 {
				testkit.MustRun(t, "qemu-img", "compare", "-f", f, "-F", f, theirs, ours)
			}
		}
	}
}
