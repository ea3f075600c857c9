package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// commitFixture builds b (4M of 0x01, or 2M with short) and o over it
// with data, a zero cluster and a discarded cluster, with createOpts.
func commitFixture(t *testing.T, d, createOpts string, short bool) {
	t.Helper()
	p := func(n string) string { return filepath.Join(d, n) }
	bsize := "4M"
	if short {
		bsize = "2M"
	}
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("b.qcow2"), bsize)
	qio(t, p("b.qcow2"), "write -P 1 0 "+bsize)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", createOpts, "-b", "b.qcow2", "-F", "qcow2", p("o.qcow2"), "4M")
	qio(t, p("o.qcow2"), "write -P 9 64k 4k", "write -z 1M 64k", "discard 2M 64k", "write -P 8 3M 100k")
}

// TestCommitMatchesQemu commits the same chains with qimg and qemu-img:
// same output, same data in the base and the overlay, same allocation
// and the same overlay header afterwards.
func TestCommitMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	for _, c := range []struct {
		opts  string
		short bool
		args  []string
	}{
		{"cluster_size=64k", false, nil},
		{"cluster_size=4k,lazy_refcounts=on,refcount_bits=64", false, nil},
		{"compat=0.10", false, nil},
		{"cluster_size=64k", true, nil},
		{"cluster_size=64k", false, []string{"-d"}},
		{"cluster_size=64k", false, []string{"-q"}},
		// The overlay is emptied in place: its features stay (qimg
		// recreated it with defaults before; found by a differential
		// fuzz).
		{"extended_l2=on,cluster_size=64k", false, nil},
		{"compression_type=zstd", false, nil},
	} {
		// QEMU builds the chain once; both tools commit copies of it
		// (the overlay's backing name is relative).
		ours, theirs := workDir(t), workDir(t)
		commitFixture(t, ours, c.opts, c.short)
		for _, n := range []string{"b.qcow2", "o.qcow2"} {
			cp(t, filepath.Join(ours, n), filepath.Join(theirs, n))
		}
		args := func(d string) []string {
			return append(append([]string{"commit"}, c.args...), filepath.Join(d, "o.qcow2"))
		}
		o1 := mustQ(t, args(ours)...)
		o2 := testkit.MustRun(t, "qemu-img", args(theirs)...)
		if o1 != o2 {
			t.Errorf("%+v: output %q, qemu-img %q", c, o1, o2)
		}
		// Both images in both directories pass qemu-img check and
		// qimg check at the end (workDir).
		for _, n := range []string{"b.qcow2", "o.qcow2"} {
			a, b := filepath.Join(ours, n), filepath.Join(theirs, n)
			testkit.MustRun(t, "qemu-img", "compare", a, b)
			// Where the data lands in the base differs with the
			// allocation order: compare the guest-side columns.
			m1 := guestMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", a))
			m2 := guestMap(t, testkit.MustRun(t, "qemu-img", "map", "--output=json", b))
			if m1 != m2 {
				t.Errorf("%+v: %s map\n%s\nqemu-img's:\n%s", c, n, m1, m2)
			}
			i1 := strings.ReplaceAll(testkit.MustRun(t, "qemu-img", "info", a), ours, "")
			i2 := strings.ReplaceAll(testkit.MustRun(t, "qemu-img", "info", b), theirs, "")
			if stripDisk(i1) != stripDisk(i2) {
				t.Errorf("%+v: %s info\n%s\nqemu-img's:\n%s", c, n, i1, i2)
			}
		}
	}
}

// guestMap is a qemu-img map --output=json without host offsets, with
// adjacent extents of the same state merged: what the guest sees of the
// allocation, independent of where the clusters landed in the file.
func guestMap(t *testing.T, m string) string {
	t.Helper()
	var es []map[string]any
	if err := json.Unmarshal([]byte(m), &es); err != nil {
		t.Fatalf("bad map JSON %v:\n%s", err, m)
	}
	var out []string
	var last string
	var start, length float64
	flush := func() {
		if last != "" {
			out = append(out, fmt.Sprintf("%v+%v %s", start, length, last))
		}
	}
	for _, e := range es {
		k := fmt.Sprintf("depth=%v present=%v zero=%v data=%v", e["depth"], e["present"], e["zero"], e["data"])
		if k == last {
			length += e["length"].(float64)
			continue
		}
		flush()
		last, start, length = k, e["start"].(float64), e["length"].(float64)
	}
	flush()
	return strings.Join(out, "\n")
}

func stripDisk(info string) string {
	var out []string
	for _, l := range strings.Split(info, "\n") {
		if !strings.HasPrefix(l, "disk size:") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCommitInterop: QEMU reads what qimg committed, qimg reads what
// qemu-img committed, and the refusals match.
func TestCommitInterop(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	commitFixture(t, d, "cluster_size=64k", false)
	o, b := filepath.Join(d, "o.qcow2"), filepath.Join(d, "b.qcow2")
	want := []string{"read -P 1 0 64k", "read -P 9 64k 4k", "read -P 1 68k 956k", "read -P 0 1M 64k",
		"read -P 1 1088k 960k", "read -P 0 2M 64k", "read -P 1 2112k 960k", "read -P 8 3M 100k", "read -P 1 3172k 924k"}
	mustQ(t, "commit", o)
	qio(t, b, want...)
	qio(t, o, want...)
	mustQ(t, "io", "-c", "write -P 7 0 8k", o)
	testkit.MustRun(t, "qemu-img", "commit", o)
	qimgIO(t, b, append([]string{"read -P 7 0 8k", "read -P 1 8k 56k"}, want[1:]...)...)
	for _, c := range [][]string{{"commit", b}, {"commit"}, {"commit", filepath.Join(d, "nope")}} {
		_, e1, c1 := runQ(t, c...)
		_, e2, c2 := testkit.Run(t, "qemu-img", c...)
		if c1 != c2 || !strings.EqualFold(firstWords(e1, "qimg: commit: "), firstWords(e2, "qemu-img: ")) {
			t.Errorf("%q: qimg exit %d %q, qemu-img exit %d %q", c, c1, e1, c2, e2)
		}
	}
}

// firstWords is the first line of a message without its prefix, up to
// a colon (the causes are worded differently), a "; " or a usage hint.
func firstWords(s, prefix string) string {
	s = strings.TrimPrefix(s, prefix)
	s, _, _ = strings.Cut(s, "\n")
	s, _, _ = strings.Cut(s, "; ") // qimg's one-line form of a multi-line message
	s, _, _ = strings.Cut(s, ":")
	s, _, _ = strings.Cut(s, " (usage")
	return s
}

// TestCommitRebaseProgress: -p prints qemu-img's progress lines, ending
// as qemu-img's do.
func TestCommitRebaseProgress(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	commitFixture(t, d, "cluster_size=64k", false)
	o := filepath.Join(d, "o.qcow2")
	out := mustQ(t, "commit", "-p", o)
	if !strings.HasPrefix(out, "    (0.00/100%)\r") || !strings.HasSuffix(out, "    (100.00/100%)\r\nImage committed.\n") {
		t.Errorf("commit -p: %q", out)
	}
	qio(t, o, "write -P 4 0 64k")
	out = mustQ(t, "rebase", "-p", "-b", "", o)
	if !strings.HasPrefix(out, "    (0.00/100%)\r") || !strings.HasSuffix(out, "    (100.00/100%)\r\n") {
		t.Errorf("rebase -p: %q", out)
	}
	qio(t, o, "read -P 4 0 64k", "read -P 9 64k 4k")
}

// An overlay with internal snapshots is committed and emptied as
// qemu-img does it: its snapshots stay and still read what they held.
func TestCommit_KeepsSnapshots(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	ours, theirs := workDir(t), workDir(t)
	for _, d := range []string{ours, theirs} {
		commitFixture(t, d, "cluster_size=64k", false)
		o := filepath.Join(d, "o.qcow2")
		testkit.MustRun(t, "qemu-img", "snapshot", "-c", "before", o)
		qio(t, o, "write -P 7 512k 64k")
	}
	o1 := mustQ(t, "commit", filepath.Join(ours, "o.qcow2"))
	o2 := testkit.MustRun(t, "qemu-img", "commit", filepath.Join(theirs, "o.qcow2"))
	if o1 != o2 {
		t.Errorf("output %q, qemu-img %q", o1, o2)
	}
	for _, n := range []string{"b.qcow2", "o.qcow2"} {
		a, b := filepath.Join(ours, n), filepath.Join(theirs, n)
		testkit.QemuCheck(t, a)
		testkit.MustRun(t, "qemu-img", "compare", a, b)
	}
	for _, d := range []string{ours, theirs} {
		o := filepath.Join(d, "o.qcow2")
		testkit.MustRun(t, "qemu-img", "snapshot", "-a", "before", o)
	}
	testkit.MustRun(t, "qemu-img", "compare", filepath.Join(ours, "o.qcow2"), filepath.Join(theirs, "o.qcow2"))
	qio(t, filepath.Join(ours, "o.qcow2"), "read -P 9 64k 4k", "read -P 8 3M 100k")
}

// TestCommit_OneBitRefcountsThenSnapshot: commit leaves the overlay
// without L2 tables, as qemu-img's does, so a snapshot of a 1-bit
// refcount overlay succeeds afterwards (the kept tables made it fail
// with a refcount overflow).
func TestCommit_OneBitRefcountsThenSnapshot(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	ours, theirs := workDir(t), workDir(t)
	for _, d := range []string{ours, theirs} {
		commitFixture(t, d, "cluster_size=4k,refcount_bits=1", false)
	}
	mustQ(t, "commit", filepath.Join(ours, "o.qcow2"))
	testkit.MustRun(t, "qemu-img", "commit", filepath.Join(theirs, "o.qcow2"))
	for _, d := range []string{ours, theirs} {
		o := filepath.Join(d, "o.qcow2")
		testkit.QemuCheck(t, o)
		testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s", o)
		testkit.QemuCheck(t, o)
	}
	testkit.MustRun(t, "qemu-img", "compare", filepath.Join(ours, "o.qcow2"), filepath.Join(theirs, "o.qcow2"))
}

// A VMDK image with a parent: qemu-img commits it into the parent;
// qring writes neither, and said the image had no backing file (or that
// -b's base was not in its chain). Now it says what it does not do, and
// changes nothing (review 53).
func TestCommit_VMDKChildRefused(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	base, top := filepath.Join(d, "base.vmdk"), filepath.Join(d, "top.vmdk")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", base, "2M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0xaa 0 2M", base)
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top, "2M")
	testkit.MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0xcc 0 4k", top)
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	before := [2][]byte{read(base), read(top)}
	for _, args := range [][]string{{"commit", top}, {"commit", "-b", "base.vmdk", top}} {
		_, errOut, code := runQ(t, args...)
		if code != 1 || !strings.Contains(errOut, "qring does not commit a VMDK image into its parent") {
			t.Errorf("qimg %v: exit %d, %q", args, code, errOut)
		}
	}
	if !bytes.Equal(before[0], read(base)) || !bytes.Equal(before[1], read(top)) {
		t.Error("a refused commit changed the images")
	}
}
