package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMeasure_OptSizeMatchesQemu: -o size= in qemu-img measure. With an
// input image, qcow2_measure checks that size's L1 table (in its uint64:
// a size in the last cluster below 2^64 wraps to 0) though it measures
// the input's size; with --size the option is replaced by it. qimg
// ignored -o size= up to 2^62 and refused it past that with its own
// words ("size too large").
func TestMeasure_OptSizeMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	in := filepath.Join(dir, "in.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", in, "1M")
	for _, o := range []string{
		"size=1G", "size=1E", "size=4611686018427387905", "size=9223372036854775808",
		"size=18446744073709551615", "size=18446744073709551000", "size=2E,cluster_size=2M",
		"size=2305843009213693953,cluster_size=2M", "size=16E", "size=1P,extended_l2=on,cluster_size=16k",
	} {
		for _, src := range [][]string{{in}, {"--size", "1M"}} {
			args := append([]string{"measure", "-O", "qcow2", "-o", o}, src...)
			out, errOut, code := runQ(t, args...)
			qout, qerr, qcode := testkit.Run(t, "qemu-img", args...)
			errOut = errLine(errOut, "qimg: measure: ")
			if qerr = errLine(qerr, "qemu-img: "); out != qout || errOut != qerr || code != qcode {
				t.Errorf("%q: qimg exit %d %s%s\nqemu-img exit %d %s%s", args, code, out, errOut, qcode, qout, qerr)
			}
		}
	}
}
