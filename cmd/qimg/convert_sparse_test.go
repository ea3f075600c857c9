package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvertSparseZeroFullyAllocates: convert -S 0 writes every byte,
// zeros too, so the output is fully allocated, as qemu-img ("Select 0
// to disable sparse detection (fully allocates output)"); an -S that is
// not whole sectors is refused with qemu-img's message.
func TestConvertSparseZeroFullyAllocates(t *testing.T) {
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "s.qcow2"), "qcow2", "8M", "write -P 3 1M 64k")
	for _, ofmt := range []string{"qcow2", "raw"} {
		ours, theirs := filepath.Join(dir, "ours."+ofmt), filepath.Join(dir, "theirs."+ofmt)
		mustQ(t, "convert", "-S", "0", "-O", ofmt, src, ours)
		testkit.MustRun(t, "qemu-img", "convert", "-S", "0", "-O", ofmt, src, theirs)
		a := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", ofmt, ours)
		b := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", ofmt, theirs)
		if a != b {
			t.Errorf("-S 0 -O %s: qemu-img map of ours:\n%s\nof qemu-img's:\n%s", ofmt, a, b)
		}
	}
	_, ours, code := runQ(t, "convert", "-S", "1000", "-O", "raw", src, filepath.Join(dir, "x.raw"))
	_, theirs, qcode := testkit.Run(t, "qemu-img", "convert", "-S", "1000", "-O", "raw", src, filepath.Join(dir, "y.raw"))
	if code != qcode || !strings.Contains(ours, "Invalid buffer size for sparse output") {
		t.Errorf("-S 1000: exit %d (%s), qemu-img %d (%s)", code, ours, qcode, theirs)
	}
}

// TestConvertSparseMapsLikeQemu: convert -S leaves out the zeros
// qemu-img leaves out, so a raw output has its data and holes in the same
// places: the source is copied run of block status by run (a data
// cluster of 4 KiB alone is written alone, whatever -S), each run in
// chunks searched for zeros as qemu-img's is_allocated_sectors_min does
// (zero runs of at least -S, their ends aligned to the largest power of
// two sectors in -S).
func TestConvertSparseMapsLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	c4k := filepath.Join(dir, "c4k.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", c4k, "4M")
	qemuIO(t, c4k, "qcow2", "write -P 1 0 4k", "write -P 2 20k 4k", "write -P 3 132k 4k", "write -P 3 140k 4k",
		"write -P 4 1M 512", "write -P 5 2M 200k")
	srcs := []string{c4k,
		qemuImage(t, filepath.Join(dir, "islands.qcow2"), "qcow2", "4M", "write -P 1 0 4k", "write -P 2 100k 1k",
			"write -P 3 200k 8k", "write -P 0 300k 64k", "write -P 4 1M 512", "write -P 4 1052k 512"),
	}
	for _, src := range srcs {
		for _, s := range []string{"8k", "12k", "1M"} {
			ours, theirs := filepath.Join(dir, "ours.raw"), filepath.Join(dir, "theirs.raw")
			// ours.raw again: a command another test forks may still hold
			// the last one's lock for a moment (runQLocked).
			if _, e, code := runQLocked(t, "convert", "-S", s, "-O", "raw", src, ours); code != 0 {
				t.Fatalf("convert -S %s %s: exit %d: %s", s, src, code, e)
			}
			testkit.MustRun(t, "qemu-img", "convert", "-S", s, "-O", "raw", src, theirs)
			a := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", "raw", ours)
			b := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", "raw", theirs)
			if a != b {
				t.Errorf("%s -S %s: qemu-img map of ours:\n%s\nof qemu-img's:\n%s", filepath.Base(src), s, a, b)
			}
			testkit.MustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ours, theirs)
		}
	}
}
