package main

import (
	"github.com/qring/qring/internal/testkit"
	"path/filepath"
	"testing"
)

// TestCompare_StrictMatchesQemu: compare -s checks the block status as
// qemu-img 7.2 does (unallocated against written zeros or a zero cluster
// mismatches; so does an unallocated tail against an earlier-ending one),
// with the same line and exit code on every pair of a set of images,
// qcow2 with and without backing files and raw.
func TestCompare_StrictMatchesQemu(t *testing.T) {
	d := qemuDir(t)
	imgs := map[string][]string{ // name: qemu-io commands
		"empty":    nil,
		"zerodata": {"write -P 0 64k 64k"},
		"zeroclus": {"write -z 64k 64k"},
		"zerodat2": {"write -P 0 64k 64k"},
		"data":     {"write -P 1 0 4k"},
		"data2":    {"write -P 2 0 4k"},
		"datatail": {"write -P 1 0 4k", "write -P 0 512k 64k"},
		"mixed":    {"write -P 1 0 4k", "write -z 128k 64k", "write -P 3 960k 64k"},
	}
	var paths []string
	for name, cmds := range imgs {
		paths = append(paths, qemuImage(t, filepath.Join(d, name+".qcow2"), "qcow2", "1M", cmds...))
	}
	paths = append(paths,
		qemuOverlay(t, filepath.Join(d, "over.qcow2"), "data.qcow2", "qcow2", "write -P 5 256k 4k"),
		qemuImage(t, filepath.Join(d, "r.raw"), "raw", "1M", "write -P 1 0 4k"),
		qemuImage(t, filepath.Join(d, "small.qcow2"), "qcow2", "512k"))
	for _, a := range paths {
		for _, b := range paths {
			want, _, wcode := testkit.Run(t, "qemu-img", "compare", "-s", a, b)
			got, e, code := runQ(t, "compare", "-s", a, b)
			if got != want || code != wcode {
				t.Errorf("compare -s %s %s: %q exit %d (%s); qemu-img: %q exit %d",
					filepath.Base(a), filepath.Base(b), got, code, e, want, wcode)
			}
		}
	}
}
