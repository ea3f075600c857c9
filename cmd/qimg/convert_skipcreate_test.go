package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_SkipCreate: convert -n writes into an existing output as
// qemu-img does. The output holds old data (0xaa), so the source's zeros
// (unallocated, a zero cluster, zeros written as data) are written as
// zeros, not left out: the output then compares identical to the source,
// qemu-img check passes (workDir) and qemu-img map of it is that of
// qemu-img's own convert -n. An output larger than the source keeps its
// tail; a smaller or missing one, or -n with -o, fails as qemu-img fails.
func TestConvert_SkipCreate(t *testing.T) {
	d := qemuDir(t)
	src := qemuImage(t, filepath.Join(d, "src.qcow2"), "qcow2", "4M", "write -P 1 0 1M", "write -P 2 2M 64k",
		"write -z 3M 64k", "write -P 3 3200k 4k", "write -P 0 3300k 64k")
	filled := func(name, fmt, size string) string {
		return qemuImage(t, filepath.Join(d, name), fmt, size, "write -P 0xaa 0 "+size)
	}
	for _, fmt := range []string{"qcow2", "raw"} {
		ours, theirs := filled("ours."+fmt, fmt, "4M"), filled("theirs."+fmt, fmt, "4M")
		mustQ(t, "convert", "-n", "-O", fmt, src, ours)
		testkit.MustRun(t, "qemu-img", "convert", "-n", "-O", fmt, src, theirs)
		if out, _, code := testkit.Run(t, "qemu-img", "compare", "-F", fmt, src, ours); code != 0 {
			t.Errorf("-O %s: qemu-img compare source output: exit %d: %s", fmt, code, out)
		}
		a := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", fmt, ours)
		b := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", fmt, theirs)
		if a != b {
			t.Errorf("-O %s: qemu-img map of ours:\n%s\nof qemu-img's:\n%s", fmt, a, b)
		}

		// Larger: the source is written at the start, the rest stays.
		big := filled("big."+fmt, fmt, "8M")
		mustQ(t, "convert", "-n", "-O", fmt, src, big)
		testkit.MustRun(t, "qemu-io", "-f", fmt, "-r", "-c", "read -P 1 0 1M", "-c", "read -P 0 1M 1M",
			"-c", "read -P 0 3M 64k", "-c", "read -P 0xaa 4M 4M", big)
	}

	small := filled("small.qcow2", "qcow2", "2M")
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"missing", "could not open", []string{"-n", "-O", "qcow2", src, filepath.Join(d, "missing.qcow2")}},
		{"smaller", "output file is smaller than input file", []string{"-n", "-O", "qcow2", src, small}},
		{"-o", "-o has no effect when skipping image creation",
			[]string{"-n", "-O", "qcow2", "-o", "cluster_size=4k", src, small}},
	} {
		_, e, code := runQ(t, append([]string{"convert"}, tc.args...)...)
		_, qe, qcode := testkit.Run(t, "qemu-img", append([]string{"convert"}, tc.args...)...)
		if code != qcode || !strings.Contains(strings.ToLower(e), strings.ToLower(tc.want)) ||
			!strings.Contains(strings.ToLower(qe), strings.ToLower(tc.want)) {
			t.Errorf("%s: exit %d (%s); qemu-img: exit %d (%s)", tc.name, code, e, qcode, qe)
		}
	}
	testkit.MustRun(t, "qemu-io", "-r", "-c", "read -P 0xaa 0 2M", small) // left as it was
}
