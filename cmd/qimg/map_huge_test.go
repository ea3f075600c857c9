package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMap_HugeOffsetsMatchQemu: --start-offset and --max-length up to
// INT64_MAX, as qemu-img map's cvtnum takes them (qimg refused anything
// past 2^62 as not a size), and their sum in QEMU's int64: past
// INT64_MAX it wraps and nothing is mapped.
func TestMap_HugeOffsetsMatchQemu(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(testkit.Dir(t), "m.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	compressed := regexp.MustCompile(`, "compressed": (true|false)`) // the 8.2 layout (documented)
	for _, a := range [][]string{
		{"--start-offset=4611686018427388416"}, {"--max-length=4611686018427388416"},
		{"--max-length=9223372036854775807"}, {"--start-offset=9223372036854775808"}, {"--start-offset=16E"},
		{"--start-offset=9223372036854775807", "--max-length=9223372036854775807"},
		{"--start-offset=512", "--max-length=9223372036854775807"},
		{"--start-offset=1k", "--max-length=9223372036854775296"}, {"--start-offset=64k", "--max-length=4k"},
	} {
		for _, f := range []string{"human", "json"} {
			args := append([]string{"map", "--output=" + f}, append(a, p)...)
			out, errOut, code := runQ(t, args...)
			qout, qerr, qcode := testkit.Run(t, "qemu-img", args...)
			out = compressed.ReplaceAllString(out, "")
			errOut = strings.Replace(errOut, "qimg: map: ", "qemu-img: ", 1)
			if out != qout || errOut != qerr || code != qcode {
				t.Errorf("%q: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", args, code, out, errOut, qcode, qout, qerr)
			}
		}
	}
}
