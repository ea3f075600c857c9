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
	t.Parallel()
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

// TestCompare_StrictClusterSizes: compare -s asks for the block status
// the way qemu-img does, one driver answer at a time, and an answer says
// EOF only when it reaches the end of the disk. A qcow2 layer answers for
// at most one L2 table (32 KiB of guest with 512-byte clusters, 2 MiB
// with 4 KiB ones), so sparse images of different cluster sizes can
// mismatch where their maps agree; past the end of a shorter backing
// file the chain's answer is allocated zeros. Same line and exit code as
// qemu-img 7.2 on each pair, both ways round.
func TestCompare_StrictClusterSizes(t *testing.T) {
	d := qemuDir(t)
	img := func(name, opts, size string, cmds ...string) string {
		p := filepath.Join(d, name)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, size)
		qemuIO(t, p, "qcow2", cmds...)
		return p
	}
	e512 := img("e512.qcow2", "cluster_size=512", "1M")
	e4k := img("e4k.qcow2", "cluster_size=4k", "1M")
	e64k := img("e64k.qcow2", "cluster_size=64k", "1M")
	a512 := img("a512.qcow2", "cluster_size=512", "1M", "write -P 1 0 4k")
	a4k := img("a4k.qcow2", "cluster_size=4k", "1M", "write -P 1 0 4k")
	t4k := img("t4k.qcow2", "cluster_size=4k", "1M", "write -P 1 0 4k", "write -P 1 1020k 4k")
	z4k := img("z4k.qcow2", "cluster_size=4k", "1M", "write -z 64k 64k")
	img("small.qcow2", "cluster_size=64k", "512k")
	over := img("over.qcow2", "backing_file=small.qcow2,backing_fmt=qcow2", "1M")
	pairs := [][2]string{
		{e512, e64k}, // offset 0: the first L2 table of e512 ends before EOF
		{e4k, e64k},  // identical
		{a4k, a512},  // 4096
		{z4k, e512},  // 65536: the zero cluster
		{t4k, a512},  // 1015808: e512's last L2 table says EOF
		{over, e64k}, // 524288: zeros past the backing file are allocated
		{over, e4k},
	}
	for _, p := range pairs {
		for _, ab := range [][2]string{p, {p[1], p[0]}} {
			want, _, wcode := testkit.Run(t, "qemu-img", "compare", "-s", ab[0], ab[1])
			got, e, code := runQ(t, "compare", "-s", ab[0], ab[1])
			if got != want || code != wcode {
				t.Errorf("compare -s %s %s: %q exit %d (%s); qemu-img: %q exit %d",
					filepath.Base(ab[0]), filepath.Base(ab[1]), got, code, e, want, wcode)
			}
		}
	}
}
