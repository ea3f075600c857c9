package main

import (
	"github.com/qring/qring/internal/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rebaseFixture builds, in a fresh directory, b1 (4M of 0x01), b2 (2M:
// 1M of 0x01, 4k of 0x02) and o over b1 with 4k of 0x09 at 64k.
func rebaseFixture(t *testing.T, d string) {
	t.Helper()
	p := func(n string) string { return filepath.Join(d, n) }
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("b1.qcow2"), "4M")
	qio(t, p("b1.qcow2"), "write -P 1 0 4M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("b2.qcow2"), "2M")
	qio(t, p("b2.qcow2"), "write -P 1 0 1M", "write -P 2 1M 4k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", p("o.qcow2"))
	qio(t, p("o.qcow2"), "write -P 9 64k 4k")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", p("r.raw"), "1M")
}

// TestRebaseMatchesQemu runs the same rebase sequence with qimg and
// qemu-img in two directories: same exit codes and messages, same
// guest data and the same allocation map after each step.
func TestRebaseMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	ours, theirs := workDir(t), workDir(t)
	rebaseFixture(t, ours)
	rebaseFixture(t, theirs)
	steps := [][]string{
		{"-b", "b2.qcow2", "-F", "qcow2", "o.qcow2"},
		{"-u", "-b", "nothere.qcow2", "-F", "qcow2", "o.qcow2"},
		{"-b", "b1.qcow2", "-F", "qcow2", "o.qcow2"}, // the old backing is missing
		{"-u", "-b", "b2.qcow2", "-F", "qcow2", "o.qcow2"},
		{"-b", "b1.qcow2", "-F", "qcow2", "o.qcow2"},
		{"-b", "nope.qcow2", "-F", "qcow2", "o.qcow2"},
		{"-f", "raw", "-b", "b1.qcow2", "-F", "qcow2", "r.raw"},
		{"o.qcow2"},
		{"-b", "b1.qcow2", "-F", "qcow2", "o.qcow2", "x"},
		{"-b", "", "o.qcow2"},
		{"-u", "-b", "b2.qcow2", "-F", "qcow2", "o.qcow2"},
		{"-u", "o.qcow2"},
	}
	abs := func(dir string, s []string) []string {
		out := []string{"rebase"}
		for _, a := range s {
			if a == "o.qcow2" || a == "r.raw" {
				a = filepath.Join(dir, a)
			}
			out = append(out, a)
		}
		return out
	}
	norm := func(s string) string {
		s = strings.ReplaceAll(s, ours+"/", "")
		s = strings.ReplaceAll(s, theirs+"/", "")
		s = strings.ReplaceAll(s, "qimg: rebase: ", "")
		s = strings.ReplaceAll(s, "qemu-img: ", "")
		l, _, _ := strings.Cut(s, "\n")
		l, _, _ = strings.Cut(l, " (usage:")
		l, _, _ = strings.Cut(l, "':") // the causes are worded differently
		return l
	}
	for _, s := range steps {
		o1, e1, c1 := runQ(t, abs(ours, s)...)
		o2, e2, c2 := testkit.Run(t, "qemu-img", abs(theirs, s)...)
		if o1 != o2 || c1 != c2 || !strings.EqualFold(norm(e1), norm(e2)) {
			t.Fatalf("rebase %q: qimg exit %d %q %q; qemu-img exit %d %q %q", s, c1, o1, e1, c2, o2, e2)
		}
		a, b := filepath.Join(ours, "o.qcow2"), filepath.Join(theirs, "o.qcow2")
		if i1, i2 := testkit.MustRun(t, "qemu-img", "info", "--output=json", a), testkit.MustRun(t, "qemu-img", "info", "--output=json", b); backingOf(t, i1) != backingOf(t, i2) {
			t.Fatalf("rebase %q: backing %q, qemu-img's %q", s, backingOf(t, i1), backingOf(t, i2))
		}
		if _, _, code := testkit.Run(t, "qemu-img", "info", "--backing-chain", b); code != 0 {
			continue // the chain does not open (nothere.qcow2)
		}
		testkit.MustRun(t, "qemu-img", "check", a)
		testkit.MustRun(t, "qemu-img", "compare", a, b)
		if m1, m2 := testkit.MustRun(t, "qemu-img", "map", "--output=json", a), testkit.MustRun(t, "qemu-img", "map", "--output=json", b); m1 != m2 {
			t.Fatalf("rebase %q: map\n%s\nqemu-img's:\n%s", s, m1, m2)
		}
	}
}

func backingOf(t *testing.T, infoJSON string) string {
	m := decodeJSON(t, infoJSON)
	f, _ := m["backing-filename"].(string)
	ff, _ := m["backing-filename-format"].(string)
	return f + "/" + ff
}

// TestRebaseInterop: the guest data is unchanged by a safe rebase (QEMU
// reads it), and qimg reads what qemu-img rebased.
func TestRebaseInterop(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	rebaseFixture(t, d)
	o := filepath.Join(d, "o.qcow2")
	want := []string{"read -P 1 0 64k", "read -P 9 64k 4k", "read -P 1 68k 3980k"}
	mustQ(t, "rebase", "-b", "b2.qcow2", "-F", "qcow2", o)
	qio(t, o, want...)
	mustQ(t, "rebase", "-b", "", o)
	qio(t, o, want...)
	if info := testkit.MustRun(t, "qemu-img", "info", o); strings.Contains(info, "backing file") {
		t.Fatalf("backing file left:\n%s", info)
	}
	// qemu-img rebases, qimg reads.
	if err := os.Remove(o); err != nil {
		t.Fatal(err)
	}
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b1.qcow2", "-F", "qcow2", o)
	qio(t, o, "write -P 9 64k 4k")
	testkit.MustRun(t, "qemu-img", "rebase", "-b", "b2.qcow2", "-F", "qcow2", o)
	qimgIO(t, o, want...)
	testkit.MustRun(t, "qemu-img", "rebase", "-u", "-b", "b1.qcow2", "-F", "qcow2", o)
	qimgIO(t, o, "read -P 1 0 64k", "read -P 9 64k 4k", "read -P 1 1M 3M")
}

// TestRebasePastOldBackingEndZeroes: where the overlay reaches past its
// old backing file's end, the old view is zeros; rebasing onto a backing
// file with data there writes zero clusters, as qemu-img, not clusters
// of zero data (the overlay came out twice as large).
func TestRebasePastOldBackingEndZeroes(t *testing.T) {
	dir := qemuDir(t)
	qemuImage(t, filepath.Join(dir, "old.qcow2"), "qcow2", "4M")
	qemuImage(t, filepath.Join(dir, "new.qcow2"), "qcow2", "16M", "write -P 7 0 16M")
	var tops [2]string
	for i, name := range []string{"ours.qcow2", "theirs.qcow2"} {
		tops[i] = qemuOverlay(t, filepath.Join(dir, name), "old.qcow2", "qcow2")
		testkit.MustRun(t, "qemu-img", "resize", "-q", tops[i], "16M")
	}
	mustQ(t, "rebase", "-b", "new.qcow2", "-F", "qcow2", tops[0])
	testkit.MustRun(t, "qemu-img", "rebase", "-b", "new.qcow2", "-F", "qcow2", tops[1])
	a := testkit.MustRun(t, "qemu-img", "map", "--output=json", tops[0])
	b := testkit.MustRun(t, "qemu-img", "map", "--output=json", tops[1])
	if a != b {
		t.Errorf("map after qimg rebase:\n%s\nafter qemu-img rebase:\n%s", a, b)
	}
	testkit.MustRun(t, "qemu-img", "compare", tops[0], tops[1])
}

// TestRebase_SafeKeepsZerosOverNewData: a safe rebase masks the new
// backing file's data where the old chain read zeros (an image without
// a backing file; past the end of a shorter old one) by zero writes into
// part of a cluster. Those make the cluster a zero cluster, as in QEMU;
// they wrote nothing when the cluster read zeros already, and the new
// backing file's data showed through (found by a differential fuzz).
// A version 2 image has no zero clusters: there a zeroing without a
// backing file left whole clusters unallocated, and the new backing
// file showed through them (review 53; qemu-img 7.2 writes nothing at
// all there and shows it everywhere): zeros are written as data.
func TestRebase_SafeKeepsZerosOverNewData(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	p := func(n string) string { return filepath.Join(d, n) }
	for _, tc := range []struct {
		name, old, size, at, n, compat string
	}{
		{"no old backing", "", "1M", "4096", "4096", "1.1"},
		{"past a shorter old backing", "1M", "4M", "2101248", "4096", "1.1"},
		{"v2, no old backing", "", "1M", "98304", "950272", "0.10"},
		{"v2, past a shorter old backing", "1M", "4M", "2101248", "65536", "0.10"},
	} {
		for _, f := range []string{"old.qcow2", "img.qcow2", "new.qcow2"} {
			os.Remove(p(f))
		}
		if tc.old != "" {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("old.qcow2"), tc.old)
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+tc.compat, "-b", "old.qcow2", "-F", "qcow2", p("img.qcow2"), tc.size)
		} else {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+tc.compat, p("img.qcow2"), tc.size)
		}
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("new.qcow2"), tc.size)
		qio(t, p("new.qcow2"), "write -P 81 "+tc.at+" "+tc.n)
		mustQ(t, "rebase", "-f", "qcow2", "-b", "new.qcow2", "-F", "qcow2", p("img.qcow2"))
		if out, _, _ := testkit.Run(t, "qemu-io", "-c", "read -P 0 0 "+tc.size, p("img.qcow2")); strings.Contains(out, "fail") {
			t.Errorf("%s: the new backing file's data shows through:\n%s", tc.name, out)
		}
		testkit.QemuCheck(t, p("img.qcow2"))
	}
}
