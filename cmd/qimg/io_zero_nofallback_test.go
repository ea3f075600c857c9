package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestIOWriteZeroNoFallbackRefusalText: write -z -n that the
// image cannot zero efficiently (an unaligned edge over data, a v2
// image, a VHD or VMDK) fails as qemu-io's does, "write failed:
// Operation not supported" (ENOTSUP); qimg printed block's error text
// ("block: operation not supported", with the driver's prefix).
func TestIOWriteZeroNoFallbackRefusalText(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	for _, c := range []struct{ fmt, opts, cmd string }{
		{"qcow2", "", "write -z -n 1000 4096"},
		{"qcow2", "compat=0.10", "write -z -n 0 64k"},
		{"qcow2", "extended_l2=on", "write -z -n 512 512"},
		{"vpc", "", "write -z -n 0 64k"},
		{"vmdk", "", "write -z -n 0 64k"},
	} {
		a, b := filepath.Join(d, "a.img"), filepath.Join(d, "b.img")
		for _, p := range []string{a, b} {
			args := []string{"create", "-q", "-f", c.fmt}
			if c.opts != "" {
				args = append(args, "-o", c.opts)
			}
			testkit.MustRun(t, "qemu-img", append(args, p, "4M")...)
			testkit.MustRun(t, "qemu-io", "-f", c.fmt, "-c", "write -P 7 0 1M", p)
		}
		o, e, code := runQ(t, "io", "-f", c.fmt, "-c", c.cmd, a)
		qo, qe, qcode := testkit.Run(t, "qemu-io", "-f", c.fmt, "-c", c.cmd, b)
		if code != qcode || normTiming(o) != normTiming(qo) || asQemuIO(e) != qe || !strings.Contains(qo+qe, "Operation not supported") {
			t.Errorf("%s %q: qimg exit %d\n%s%s\nqemu-io exit %d\n%s%s", c.fmt, c.cmd, code, o, e, qcode, qo, qe)
		}
	}
}
