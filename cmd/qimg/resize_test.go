package main

import (
	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/uring/looptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// qio runs qemu-io commands on img and fails on an error or a pattern
// mismatch.
func qio(t *testing.T, img string, cmds ...string) string {
	t.Helper()
	args := []string{}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := testkit.MustRun(t, "qemu-io", append(args, img)...)
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io %q %s: %s", cmds, img, out)
	}
	return out
}

// qimgIO runs qimg io commands on img and fails on an error.
func qimgIO(t *testing.T, img string, cmds ...string) string {
	t.Helper()
	args := []string{"io"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return mustQ(t, append(args, img)...)
}

// sameResize runs the same resize on two copies, one with qimg and one
// with qemu-img, and compares stdout, the exit code and the stderr
// message (without the program prefixes).
func sameResize(t *testing.T, ours, theirs string, args ...string) {
	t.Helper()
	o1, e1, c1 := runQ(t, replaceArg(args, "IMG", ours)...)
	o2, e2, c2 := testkit.Run(t, "qemu-img", replaceArg(args, "IMG", theirs)...)
	norm := func(s string) string {
		s = strings.ReplaceAll(s, "qimg: resize: ", "")
		return strings.ReplaceAll(s, "qemu-img: ", "")
	}
	firstLine := func(s string) string { l, _, _ := strings.Cut(norm(s), "\n"); l, _, _ = strings.Cut(l, ";"); return l }
	if o1 != o2 || c1 != c2 || firstLine(e1) != firstLine(e2) {
		t.Errorf("%q: qimg exit %d %q %q; qemu-img exit %d %q %q", args, c1, o1, e1, c2, o2, e2)
	}
}

func replaceArg(args []string, from, to string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == from {
			a = to
		}
		out[i] = a
	}
	return out
}

func cp(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResizeMatchesQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", ours, "1M")
	cp(t, ours, theirs)
	rawOurs, rawTheirs := filepath.Join(d, "ours.raw"), filepath.Join(d, "theirs.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", rawOurs, "1M")
	cp(t, rawOurs, rawTheirs)
	steps := [][]string{
		{"resize", "IMG", "2M"}, {"resize", "IMG", "1M"}, {"resize", "--shrink", "IMG", "1M"},
		{"resize", "IMG", "+1M"}, {"resize", "IMG", "-512"}, {"resize", "--shrink", "IMG", "-512"},
		{"resize", "--shrink", "IMG", "-10G"}, {"resize", "IMG", "3000001"}, {"resize", "-q", "IMG", "+64k"},
		{"resize", "IMG", "abc"}, {"resize", "--shrink", "IMG", "0"}, {"resize", "-f", "raw", "IMG", "1M"},
	}
	for _, s := range steps {
		sameResize(t, ours, theirs, s...)
	}
	for _, s := range [][]string{{"resize", "-f", "raw", "IMG", "3000001"}, {"resize", "-f", "raw", "IMG", "1000"},
		{"resize", "-f", "raw", "--shrink", "IMG", "1000"}, {"resize", "-f", "raw", "IMG", "+1M"}} {
		sameResize(t, rawOurs, rawTheirs, s...)
	}
	for _, p := range [][2]string{{ours, theirs}, {rawOurs, rawTheirs}} {
		a, _ := os.Stat(p[0])
		f := "qcow2"
		if strings.HasSuffix(p[0], ".raw") {
			f = "raw"
		}
		testkit.MustRun(t, "qemu-img", "compare", "-f", f, "-F", f, p[0], p[1])
		if f == "raw" {
			b, _ := os.Stat(p[1])
			if a.Size() != b.Size() {
				t.Errorf("raw sizes: ours %d, qemu-img's %d", a.Size(), b.Size())
			}
		}
	}
}

// TestResizeInterop: qimg resizes images qemu-io wrote and QEMU reads
// them back (qemu-img check runs at the end); qimg reads what qemu-img
// resized.
func TestResizeInterop(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	p := func(n string) string { return filepath.Join(d, n) }

	// Shrink then grow: the data before the new end survives, the
	// clusters past it were discarded and read as zeros after growing.
	for _, opts := range []string{"cluster_size=64k", "cluster_size=4k,compat=0.10", "cluster_size=512,refcount_bits=64"} {
		img := p("s.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, img, "8M")
		qio(t, img, "write -P 0x11 0 3M", "write -P 0x22 3M 5M")
		mustQ(t, "resize", "--shrink", img, "3000k")
		out := testkit.MustRun(t, "qemu-img", "info", img)
		if !strings.Contains(out, "(3072000 bytes)") {
			t.Fatalf("%s: after shrink:\n%s", opts, out)
		}
		testkit.MustRun(t, "qemu-img", "check", img)
		// The file is cut after its last used cluster. (qimg keeps the
		// L2 tables past the new end, which QEMU frees: with small
		// clusters they lie among the data and keep the file longer.)
		if fi, err := os.Stat(img); err != nil {
			t.Fatal(err)
		} else if opts == "cluster_size=64k" && fi.Size() > 4<<20 {
			t.Errorf("%s: the file keeps %d bytes after the shrink to 3000k", opts, fi.Size())
		}
		qio(t, img, "read -P 0x11 0 3000k")
		mustQ(t, "resize", img, "8M")
		qio(t, img, "read -P 0x11 0 3000k", "read -P 0 3000k 5192k")
		qimgIO(t, img, "read -P 0x11 0 3000k", "read -P 0 3000k 5192k")
		testkit.MustRun(t, "qemu-img", "check", img)
	}

	// Growing an overlay whose backing file is longer: the new range
	// reads zeros, as QEMU makes it.
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("b.qcow2"), "4M")
	qio(t, p("b.qcow2"), "write -P 7 0 4M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", p("o.qcow2"), "1M")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", p("q.qcow2"), "1M")
	mustQ(t, "resize", p("o.qcow2"), "3M")
	testkit.MustRun(t, "qemu-img", "resize", p("q.qcow2"), "3M")
	qio(t, p("o.qcow2"), "read -P 7 0 1M", "read -P 0 1M 2M")
	testkit.MustRun(t, "qemu-img", "compare", p("o.qcow2"), p("q.qcow2"))
	a := strings.ReplaceAll(mustQ(t, "map", "--output=json", p("o.qcow2")), `, "compressed": false`, "")
	if b := testkit.MustRun(t, "qemu-img", "map", "--output=json", p("q.qcow2")); a != b {
		t.Errorf("map after growing an overlay:\nqimg:\n%s\nqemu-img:\n%s", a, b)
	}
	// v2 cannot: both fail and leave the size.
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "b.qcow2", "-F", "qcow2", p("v2.qcow2"), "1M")
	if _, e, code := runQ(t, "resize", p("v2.qcow2"), "3M"); code != 1 || !strings.Contains(e, "Failed to zero out new clusters") {
		t.Errorf("v2 overlay grow: exit %d %s", code, e)
	}
	// Inside the old end's cluster zero buffers do, and both grow
	// (qimg refused; found by a differential fuzz).
	for _, n := range []string{"v2a.qcow2", "v2b.qcow2"} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "b.qcow2", "-F", "qcow2", p(n), "1015808") // 1M - 32k
	}
	mustQ(t, "resize", p("v2a.qcow2"), "1M")
	testkit.MustRun(t, "qemu-img", "resize", p("v2b.qcow2"), "1M")
	qio(t, p("v2a.qcow2"), "read -P 7 0 1015808", "read -P 0 1015808 32k")
	testkit.MustRun(t, "qemu-img", "compare", p("v2a.qcow2"), p("v2b.qcow2"))
	if _, e, code := runQ(t, "resize", p("v2a.qcow2"), "2M"); code != 1 || !strings.Contains(e, "Failed to zero out new clusters") {
		t.Errorf("v2 overlay grow past its last cluster: exit %d %s", code, e)
	}

	// qimg reads what qemu-img shrank and grew.
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p("q2.qcow2"), "8M")
	qio(t, p("q2.qcow2"), "write -P 0x33 0 8M")
	testkit.MustRun(t, "qemu-img", "resize", "--shrink", p("q2.qcow2"), "2M")
	testkit.MustRun(t, "qemu-img", "resize", p("q2.qcow2"), "6M")
	qimgIO(t, p("q2.qcow2"), "read -P 0x33 0 2M", "read -P 0 2M 4M")

	// Raw: qimg grows and shrinks, qemu-io reads.
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", p("r.raw"), "1M")
	qio(t, p("r.raw"), "write -P 5 0 1M")
	mustQ(t, "resize", "-f", "raw", p("r.raw"), "2M")
	mustQ(t, "resize", "-f", "raw", "--shrink", p("r.raw"), "1536k")
	testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "read -P 5 0 1M", "-c", "read -P 0 1M 512k", p("r.raw"))
}

// A version 2 image with snapshots is not resized, as QEMU refuses it
// (a version 2 snapshot need not record its disk size); version 3
// images with snapshots are.
func TestResize_SnapshotsByVersion(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	for _, compat := range []string{"0.10", "1.1"} {
		ours, theirs := filepath.Join(d, "ours"+compat), filepath.Join(d, "theirs"+compat)
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+compat, ours, "1M")
		testkit.MustRun(t, "qemu-io", "-c", "write -P 5 0 64k", ours)
		testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", ours)
		cp(t, ours, theirs)
		for _, s := range [][]string{{"resize", "IMG", "2M"}, {"resize", "--shrink", "IMG", "512k"}, {"resize", "IMG", "512k"}} {
			_, e1, c1 := runQ(t, replaceArg(s, "IMG", ours)...)
			_, e2, c2 := testkit.Run(t, "qemu-img", replaceArg(s, "IMG", theirs)...)
			if c1 != c2 || (compat == "0.10") != (c1 != 0) {
				t.Errorf("compat %s %q: qimg exit %d %q; qemu-img exit %d %q", compat, s, c1, e1, c2, e2)
			}
		}
		testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		testkit.QemuCheck(t, ours)
		testkit.MustRun(t, "qemu-img", "snapshot", "-a", "s1", ours)
		testkit.MustRun(t, "qemu-io", "-c", "read -P 5 0 64k", ours)
	}
}

// TestRawPreallocOutOfSpace: a raw create or resize with
// preallocation=full or falloc that runs out of space leaves the file at
// its old size, as qemu-img does; qimg left it grown (a raw image's size
// is its file's: the failed resize changed the disk's size; review 53).
func TestRawPreallocOutOfSpace(t *testing.T) {
	dir := looptest.SmallTmpfs(t, 16<<20)
	for _, mode := range []string{"full", "falloc"} {
		p := filepath.Join(dir, "c-"+mode+".raw")
		if _, _, code := runQ(t, "create", "-q", "-f", "raw", "-o", "preallocation="+mode, p, "64M"); code == 0 {
			t.Errorf("create %s past the space succeeded", mode)
		}
		if st, err := os.Stat(p); err == nil && st.Size() != 0 {
			t.Errorf("create %s: a failed create left %d bytes", mode, st.Size())
		}
		os.Remove(p)
		p = filepath.Join(dir, "r-"+mode+".raw")
		mustQ(t, "create", "-q", "-f", "raw", p, "1M")
		if _, _, code := runQ(t, "resize", "-f", "raw", "--preallocation="+mode, p, "64M"); code == 0 {
			t.Errorf("resize %s past the space succeeded", mode)
		}
		if st, err := os.Stat(p); err != nil {
			t.Error(err)
		} else if st.Size() != 1<<20 {
			t.Errorf("resize %s: the failed resize left the file at %d bytes", mode, st.Size())
		}
		os.Remove(p)
	}
}
