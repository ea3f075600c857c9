package main

import (
	"github.com/qring/qring/internal/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCreate_EchoedOptions: the options create echoes with their defaults
// (compression_type=zlib, extended_l2=off) are accepted with those values,
// with qemu-img's line, and so are compression_type=zstd and extended_l2=on;
// the values qring cannot create are refused before anything is echoed or written.
func TestCreate_EchoedOptions(t *testing.T) {
	d := qemuDir(t)
	ours := filepath.Join(d, "a.qcow2")
	theirs := filepath.Join(d, "b.qcow2")
	opt := "compression_type=zlib,extended_l2=off"
	// Booleans echo as given (yes, true, y): qimg said on.
	for _, opt := range []string{opt, "compression_type=zstd", "lazy_refcounts=yes,extended_l2=true",
		"lazy_refcounts=y,extended_l2=no", "data_file=" + filepath.Join(d, "df.raw") + ",data_file_raw=yes"} {
		os.Remove(ours)
		os.Remove(theirs)
		got := mustQ(t, "create", "-f", "qcow2", "-o", opt, ours, "1M")
		want := testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", opt, theirs, "1M")
		if strings.ReplaceAll(want, theirs, ours) != got {
			t.Errorf("create -o %s echo:\n ours %q\nqemu  %q", opt, got, want)
		}
	}
	// extended_l2=on creates subclusters (issue 18), echoed as qemu-img
	// does; QEMU's own checks pass on the result.
	xopt := "extended_l2=on,cluster_size=128k"
	xo, xt := filepath.Join(d, "x.qcow2"), filepath.Join(d, "y.qcow2")
	got := mustQ(t, "create", "-f", "qcow2", "-o", xopt, xo, "1G")
	want := testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "-o", xopt, xt, "1G")
	if strings.ReplaceAll(want, xt, xo) != got {
		t.Errorf("create echo:\n ours %q\nqemu  %q", got, want)
	}
	if info := testkit.MustRun(t, "qemu-img", "info", xo); !strings.Contains(info, "extended l2: true") {
		t.Errorf("qemu-img info of an extended_l2=on image:\n%s", info)
	}
	testkit.QemuCheck(t, xo)
	// Too small a cluster: echoed, then refused, as qemu-img does.
	small := filepath.Join(d, "s.qcow2")
	if _, e, code := runQ(t, "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=8k", small, "1M"); code != 1 || !strings.Contains(e, "16384") {
		t.Errorf("extended_l2 with 8k clusters: exit %d, stderr %q", code, e)
	}
	if _, err := os.Stat(small); err == nil {
		t.Errorf("refused create left %s behind", small)
	}
	for _, o := range []string{"extended_l2=maybe", "compression_type=lz4"} {
		p := filepath.Join(d, "r.qcow2")
		out, e, code := runQ(t, "create", "-f", "qcow2", "-o", o, p, "1M")
		name, _, _ := strings.Cut(o, "=")
		name = strings.ReplaceAll(name, "compression_type", "compression-type") // QEMU's name for it
		// A bool that does not parse is refused before the echo; an
		// enum's unknown value after it (qemu-img's driver refuses it).
		if echoed := strings.HasPrefix(out, "Formatting"); code != 1 || echoed != (name == "compression-type") || !strings.Contains(e, name) {
			t.Errorf("create -o %s: exit %d, stdout %q, stderr %q; want 1, echoed only for an enum, a message naming %s", o, code, out, e, name)
		}
		if _, err := os.Stat(p); err == nil {
			t.Errorf("create -o %s left %s behind", o, p)
		}
	}
}

// TestCreate_BackingChecked: create opens the backing file as qemu-img
// create does, also when the size and format are given (qimg created
// images over files that do not exist, and one backed by itself that no
// tool could open; found by a differential fuzz), and -u skips that.
func TestCreate_BackingChecked(t *testing.T) {
	testkit.NeedQemu(t)
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"-b", "s.qcow2", "-F", "qcow2", "s.qcow2", "1M"}, 1},
		{[]string{"-b", "nothere.qcow2", "-F", "qcow2", "n.qcow2", "1M"}, 1},
		{[]string{"-u", "-b", "nothere.qcow2", "-F", "qcow2", "u.qcow2", "1M"}, 0},
	} {
		ours, theirs := t.TempDir(), t.TempDir() // dangling backing files: no check at the end
		run := func(d string, tool func(args ...string) int) int {
			t.Chdir(d)
			return tool(append([]string{"create", "-q", "-f", "qcow2"}, c.args...)...)
		}
		code := run(ours, func(a ...string) int { _, _, c := runQ(t, a...); return c })
		qcode := run(theirs, func(a ...string) int { _, _, c := testkit.Run(t, "qemu-img", a...); return c })
		if code != qcode || code != c.want {
			t.Errorf("create %q: exit %d, qemu-img %d, want %d", c.args, code, qcode, c.want)
		}
		img := c.args[len(c.args)-2]
		if _, err := os.Stat(filepath.Join(ours, img)); (err == nil) != (c.want == 0) {
			t.Errorf("create %q: image file exists: %v", c.args, err == nil)
		}
	}
}
