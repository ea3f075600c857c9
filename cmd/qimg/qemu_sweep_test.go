package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// TestMeasure_ImageOptsAndSnapshot: measure opens its input with
// --object and --image-opts as qemu-img does (qimg took the option
// string for a file name), and -l SNAPSHOT never measures the active
// layer in the snapshot's stead (qimg ignored -l and printed the active
// layer's numbers).
func TestMeasure_ImageOptsAndSnapshot(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	sn := qemuImage(t, filepath.Join(dir, "sn.qcow2"), "qcow2", "64M", "write 0 1M")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", sn)
	qemuIO(t, sn, "qcow2", "write 8M 8M")
	args := []string{"measure", "-O", "qcow2", "-l", "s1", sn}
	theirs := testkit.MustRun(t, "qemu-img", args...)
	if ours, errOut, code := runQ(t, args...); code != 0 || ours != theirs {
		t.Errorf("%q: qimg (exit %d, %q) printed other numbers than qemu-img:\nqimg:\n%s\nqemu-img:\n%s", args, code, errOut, ours, theirs)
	}

	enc := filepath.Join(testkit.Dir(t), "enc.qcow2") // qemu-img check needs the key
	defer testkit.QemuCheckSecret(t, enc, "abc")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "--object", secObj,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10", enc, "4M")
	testkit.MustRun(t, "qemu-io", "--object", secObj, "--image-opts", imageOpts(enc), "-c", "write -P 1 0 1M")
	for _, args := range [][]string{
		{"measure", "-O", "qcow2", "--object", secObj, "--image-opts", imageOpts(enc)},
		{"measure", "--output=json", "--image-opts", imageOpts(enc), "--object", secObj, "-O", "raw"},
	} {
		if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
			t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
		}
	}
}

// TestConvert_TargetIsZero: convert --target-is-zero (with -n) leaves
// the source's zeros out of the existing output as qemu-img does (qimg
// refused the option), and is refused without -n with qemu-img's
// message.
func TestConvert_TargetIsZero(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "4M", "write -P 1 0 64k", "write -z 1M 1M", "write -P 2 3M 4k")
	var outs []string
	for _, name := range []string{"ours.qcow2", "theirs.qcow2"} {
		// The old data shows where convert wrote zeros and where it did
		// not: --target-is-zero means the user vouches for the zeros.
		outs = append(outs, qemuImage(t, filepath.Join(dir, name), "qcow2", "4M", "write -P 9 0 4M"))
	}
	mustQ(t, "convert", "--target-is-zero", "-n", "-O", "qcow2", src, outs[0])
	testkit.MustRun(t, "qemu-img", "convert", "--target-is-zero", "-n", "-O", "qcow2", src, outs[1])
	testkit.MustRun(t, "qemu-img", "compare", outs[0], outs[1])
	if a, b := testkit.MustRun(t, "qemu-img", "map", "--output=json", outs[0]), testkit.MustRun(t, "qemu-img", "map", "--output=json", outs[1]); a != b {
		t.Errorf("maps differ:\nqimg's output:\n%s\nqemu-img's:\n%s", a, b)
	}

	args := []string{"convert", "--target-is-zero", "-O", "qcow2", src, filepath.Join(dir, "new.qcow2")}
	_, errOut, code := runQ(t, args...)
	_, qerr, qcode := testkit.Run(t, "qemu-img", args...)
	if code != qcode || strings.TrimPrefix(errOut, "qimg: convert: ") != strings.TrimPrefix(qerr, "qemu-img: ") {
		t.Errorf("without -n: qimg exit %d %q; qemu-img exit %d %q", code, errOut, qcode, qerr)
	}
}

// TestJSON_KeyOrderLikeQemu: info and check print their JSON objects
// with the keys in qemu-img's order, so that the text is qemu-img's
// (qimg printed a backing file's format and the snapshots, and check's
// counters, elsewhere).
func TestJSON_KeyOrderLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	base := qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "4M", "write -P 1 0 128k", "write -c -P 2 1M 64k")
	top := qemuOverlay(t, filepath.Join(dir, "top.qcow2"), "base.qcow2", "qcow2", "write -P 3 64k 128k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", top)
	leaky := filepath.Join(dir, "leaky.qcow2")
	testkit.MustRun(t, "cp", base, leaky)
	leakCluster(t, leaky)
	for _, args := range [][]string{
		{"info", "--output=json", top},
		{"info", "--output=json", "--backing-chain", top},
		{"check", "--output=json", base},
	} {
		if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
			t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
		}
	}
	args := []string{"check", "--output=json", leaky}
	ours, _, code := runQ(t, args...)
	theirs, _, qcode := testkit.Run(t, "qemu-img", args...)
	if ours != theirs || code != qcode {
		t.Errorf("%q:\nqimg (exit %d):\n%s\nqemu-img (exit %d):\n%s", args, code, ours, qcode, theirs)
	}
	mustQ(t, "check", "-q", "-r", "leaks", leaky)
}

// TestMap_WindowLikeQemu: map --start-offset and --max-length limit the
// map to a window as qemu-img's do (qimg refused both options): the
// extents are cut at its ends, and an empty window is one empty extent.
func TestMap_WindowLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	base := qemuImage(t, filepath.Join(dir, "base.qcow2"), "qcow2", "8M", "write -P 1 0 1M", "write -z 2M 1M", "write -c -P 2 4M 64k")
	top := qemuOverlay(t, filepath.Join(dir, "top.qcow2"), "base.qcow2", "qcow2", "write -P 3 512k 1M")
	raw := filepath.Join(dir, "top.raw")
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", top, raw)
	for _, p := range []string{base, top, raw} {
		for _, w := range [][]string{
			{"--start-offset", "1M", "--max-length", "2M"},
			{"--start-offset=1000", "--max-length=5000"},
			{"--start-offset", "600k"},
			{"--max-length", "1048577"},
			{"--start-offset", "4M", "--max-length", "32k"},
			{"--start-offset", "100M"},
			{"--max-length", "0"},
		} {
			for _, out := range []string{"--output=json", "--output=human"} {
				args := append([]string{"map", out}, append(w, p)...)
				ours, _, code := runQ(t, args...)
				theirs, _, qcode := testkit.Run(t, "qemu-img", args...)
				// qimg's JSON has QEMU 8.2's "compressed" (writeMapJSON).
				ours = strings.NewReplacer(`, "compressed": false`, "", `, "compressed": true`, "").Replace(ours)
				if ours != theirs || code != qcode {
					t.Errorf("%q:\nqimg (exit %d):\n%s\nqemu-img (exit %d):\n%s", args, code, ours, qcode, theirs)
				}
			}
		}
	}
}

// TestConvert_BackingLikeQemu: convert -B BACKING -F FMT (and -o
// backing_file, backing_fmt) writes an output over BACKING that holds
// only the source's own layer, as qemu-img's does (qimg refused the
// options): what the source leaves to its backing file stays
// unallocated, its zeros are written, and past the end of a shorter
// backing file nothing is; with -n into an existing image too. The
// refusals are qemu-img's.
func TestConvert_BackingLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	qemuImage(t, filepath.Join(dir, "small.qcow2"), "qcow2", "2M", "write -P 4 0 2M")
	var srcs []string
	for _, compat := range []string{"1.1", "0.10"} {
		p := filepath.Join(dir, "ov-"+compat+".qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+compat, "-b", "small.qcow2", "-F", "qcow2", p, "8M")
		qemuIO(t, p, "qcow2", "write -z 0 64k", "write -P 5 1M 2M", "write -z 4M 1M", "write -P 0 6M 64k")
		srcs = append(srcs, p)
	}
	sameOutputs := func(what, ours, theirs string) {
		t.Helper()
		testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		a := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours)
		b := testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs)
		if a != b {
			t.Errorf("%s: maps differ:\nqimg's output:\n%s\nqemu-img's:\n%s", what, a, b)
		}
	}
	n := 0
	for _, src := range srcs {
		for _, opts := range [][]string{
			{"-B", "small.qcow2", "-F", "qcow2"},
			{"-o", "backing_file=small.qcow2,backing_fmt=qcow2"},
			{"-B", "small.qcow2", "-F", "qcow2", "-o", "compat=0.10"},
			{"-B", "small.qcow2", "-F", "qcow2", "-S", "0"},
			{"-B", "small.qcow2", "-F", "qcow2", "-o", "cluster_size=1M"},
		} {
			n++
			ours, theirs := filepath.Join(dir, fmt.Sprintf("o%d.qcow2", n)), filepath.Join(dir, fmt.Sprintf("q%d.qcow2", n))
			args := append([]string{"convert", "-O", "qcow2"}, opts...)
			mustQ(t, append(args, src, ours)...)
			testkit.MustRun(t, "qemu-img", append(args, src, theirs)...)
			sameOutputs(fmt.Sprintf("%q", args), ours, theirs)
			if info := testkit.MustRun(t, "qemu-img", "info", ours); !strings.Contains(info, "backing file: small.qcow2") {
				t.Errorf("%q: the output has no backing file:\n%s", args, info)
			}
		}
		// -n: into an existing image (full of old data) with -B.
		n++
		ours, theirs := filepath.Join(dir, fmt.Sprintf("o%d.qcow2", n)), filepath.Join(dir, fmt.Sprintf("q%d.qcow2", n))
		for _, p := range []string{ours, theirs} {
			qemuImage(t, p, "qcow2", "8M", "write -P 9 0 8M")
		}
		args := []string{"convert", "-n", "-O", "qcow2", "-B", "small.qcow2", "-F", "qcow2", src}
		mustQ(t, append(args, ours)...)
		testkit.MustRun(t, "qemu-img", append(args, theirs)...)
		sameOutputs(fmt.Sprintf("%q", args), ours, theirs)
	}

	for _, opts := range [][]string{
		{"-O", "qcow2", "-B", "small.qcow2"},
		{"-O", "qcow2", "-F", "qcow2"},
		{"-O", "raw", "-B", "small.qcow2", "-F", "qcow2"},
	} {
		out := filepath.Join(dir, "refused.qcow2")
		args := append(append([]string{"convert"}, opts...), srcs[0], out)
		_, errOut, code := runQ(t, args...)
		_, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode || strings.TrimPrefix(errOut, "qimg: convert: ") != strings.TrimPrefix(qerr, "qemu-img: ") {
			t.Errorf("%q: qimg exit %d %q; qemu-img exit %d %q", opts, code, errOut, qcode, qerr)
		}
		os.Remove(out)
	}
}

// TestAmend_HelpAndProgressLikeQemu: amend -o help lists the amend
// options in qemu-img's layout and exits 0 (qimg refused "help" as an
// option), for the format given or the image's; a raw image is refused
// as qemu-img refuses it. -p is accepted (qimg refused it) and prints
// qemu-img's progress lines.
func TestAmend_HelpAndProgressLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	img := qemuImage(t, filepath.Join(dir, "a.qcow2"), "qcow2", "4M", "write -P 1 0 64k")
	raw := qemuImage(t, filepath.Join(dir, "a.raw"), "raw", "4M")
	for _, args := range [][]string{
		{"amend", "-o", "help", img},
		{"amend", "-f", "qcow2", "-o", "help"},
		{"amend", "-o", "?,compat=1.1", img},
		{"amend", "-f", "raw", "-o", "help", raw},
		{"amend", "-f", "raw", "-o", "help"},
	} {
		ours, errOut, code := runQ(t, args...)
		theirs, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode || strings.TrimPrefix(errOut, "qimg: amend: ") != strings.TrimPrefix(qerr, "qemu-img: ") {
			t.Errorf("%q: qimg exit %d %q; qemu-img exit %d %q", args, code, errOut, qcode, qerr)
		}
		// qimg lists the options it amends, each as qemu-img does.
		if qcode == 0 {
			lines := strings.SplitAfter(ours, "\n")
			if len(lines) < 3 || lines[0] != "Amend options for 'qcow2':\n" {
				t.Errorf("%q: qimg printed %q", args, ours)
			}
			for _, l := range lines {
				if !strings.Contains(theirs, l) {
					t.Errorf("%q: qimg's line %q is not qemu-img's:\n%s", args, l, theirs)
				}
			}
		}
	}
	ours, theirs := filepath.Join(dir, "o.qcow2"), filepath.Join(dir, "q.qcow2")
	testkit.MustRun(t, "cp", img, ours)
	testkit.MustRun(t, "cp", img, theirs)
	args := []string{"amend", "-p", "-o", "lazy_refcounts=on"}
	if a, b := mustQ(t, append(args, ours)...), testkit.MustRun(t, "qemu-img", append(args, theirs)...); a != b {
		t.Errorf("%q: qimg printed %q, qemu-img %q", args, a, b)
	}
	args = []string{"amend", "-p", "-q", "-o", "compat=0.10"}
	if a, b := mustQ(t, append(args, ours)...), testkit.MustRun(t, "qemu-img", append(args, theirs)...); a != b {
		t.Errorf("%q: qimg printed %q, qemu-img %q", args, a, b)
	}
	testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
	if a, b := testkit.MustRun(t, "qemu-img", "info", "-U", ours), testkit.MustRun(t, "qemu-img", "info", "-U", theirs); strings.ReplaceAll(a, "o.qcow2", "q.qcow2") != b {
		t.Errorf("after amend:\nqimg's:\n%s\nqemu-img's:\n%s", a, b)
	}
}

// TestResize_PreallocationLikeQemu: resize --preallocation=falloc|full
// grows a raw image with its new part allocated, as qemu-img does (qimg
// refused every mode but off), and the refusals are qemu-img's: an
// unknown mode, a size that does not grow, metadata for raw.
func TestResize_PreallocationLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	for _, mode := range []string{"falloc", "full"} {
		var files []string
		for _, who := range []string{"ours", "theirs"} {
			p := filepath.Join(dir, who+"-"+mode+".raw")
			if err := os.WriteFile(p, []byte(strings.Repeat("x", 1000)), 0o644); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		}
		args := []string{"resize", "-f", "raw", "--preallocation=" + mode}
		a := mustQ(t, append(args, files[0], "2M")...)
		b := testkit.MustRun(t, "qemu-img", append(args, files[1], "2M")...)
		if a != b {
			t.Errorf("%s: qimg printed %q, qemu-img %q", mode, a, b)
		}
		x, err1 := os.ReadFile(files[0])
		y, err2 := os.ReadFile(files[1])
		if err1 != nil || err2 != nil || string(x) != string(y) {
			t.Errorf("%s: the files differ (%v, %v)", mode, err1, err2)
		}
		var s1, s2 syscall.Stat_t
		if syscall.Stat(files[0], &s1) != nil || syscall.Stat(files[1], &s2) != nil || s1.Blocks != s2.Blocks {
			t.Errorf("%s: qimg's file has %d blocks, qemu-img's %d", mode, s1.Blocks, s2.Blocks)
		}
	}
	raw := qemuImage(t, filepath.Join(dir, "r.raw"), "raw", "4M")
	img := qemuImage(t, filepath.Join(dir, "q.qcow2"), "qcow2", "4M")
	for _, args := range [][]string{
		{"resize", "-f", "raw", "--preallocation=bogus", raw, "8M"},
		{"resize", "-f", "raw", "--preallocation=metadata", raw, "8M"},
		{"resize", "-f", "raw", "--preallocation=falloc", raw, "4M"},
		{"resize", "-f", "raw", "--preallocation=full", "--shrink", raw, "2M"},
		{"resize", "--preallocation=falloc", img, "2M"},
	} {
		ours, errOut, code := runQ(t, args...)
		theirs, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		if ours != theirs || code != qcode || strings.TrimPrefix(errOut, "qimg: resize: ") != strings.TrimPrefix(qerr, "qemu-img: ") {
			t.Errorf("%q: qimg exit %d %q %q; qemu-img exit %d %q %q", args, code, ours, errOut, qcode, theirs, qerr)
		}
	}
}

// TestRaw_FirstBlockLikeQemu: a raw image qimg creates (create -f raw,
// convert -O raw, resize of an empty file) has its first block
// allocated, as QEMU's file driver allocates it, so that qemu-img map
// and compare -s see the same file as qemu-img's (qimg's new raw files
// were all hole).
func TestRaw_FirstBlockLikeQemu(t *testing.T) {
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "4M", "write -P 1 1M 4k")
	type step struct {
		name string
		run  func(tool func(...string), out string)
	}
	for _, s := range []step{
		{"create 4M", func(tool func(...string), out string) { tool("create", "-q", "-f", "raw", out, "4M") }},
		{"create 1000", func(tool func(...string), out string) { tool("create", "-q", "-f", "raw", out, "1000") }},
		{"convert", func(tool func(...string), out string) { tool("convert", "-O", "raw", src, out) }},
		{"resize empty", func(tool func(...string), out string) {
			if err := os.WriteFile(out, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			tool("resize", "-q", "-f", "raw", out, "1M")
		}},
	} {
		ours, theirs := filepath.Join(dir, "ours.raw"), filepath.Join(dir, "theirs.raw")
		s.run(func(args ...string) { mustQ(t, args...) }, ours)
		s.run(func(args ...string) { testkit.MustRun(t, "qemu-img", args...) }, theirs)
		a := testkit.MustRun(t, "qemu-img", "map", "-f", "raw", "--output=json", ours)
		b := testkit.MustRun(t, "qemu-img", "map", "-f", "raw", "--output=json", theirs)
		if a != b {
			t.Errorf("%s: qemu-img map of qimg's file:\n%s\nof qemu-img's:\n%s", s.name, a, b)
		}
		testkit.MustRun(t, "qemu-img", "compare", "-s", "-f", "raw", "-F", "raw", ours, theirs)
		os.Remove(ours)
		os.Remove(theirs)
	}
}

// TestCompare_ProgressLikeQemu: compare -p prints qemu-img's progress
// lines before its verdict and a new line after it (qimg ignored -p); the
// lines after the first depend on how each tool walks the images, so
// they are left out of the comparison.
func TestCompare_ProgressLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	a := qemuImage(t, filepath.Join(dir, "a.qcow2"), "qcow2", "4M", "write -P 1 0 1M")
	b := qemuImage(t, filepath.Join(dir, "b.qcow2"), "qcow2", "4M", "write -P 1 0 1M")
	c := qemuImage(t, filepath.Join(dir, "c.qcow2"), "qcow2", "4M", "write -P 1 0 1M", "write -P 2 2M 512")
	d := qemuImage(t, filepath.Join(dir, "d.qcow2"), "qcow2", "8M", "write -P 1 0 1M")
	steps := regexp.MustCompile(`    \([0-9.]+/100%\)\r`)
	for _, args := range [][]string{
		{"compare", "-p", a, b},
		{"compare", "-p", a, c},
		{"compare", "-p", "-q", a, c},
		{"compare", "-p", "-s", a, d},
		{"compare", "-p", a, d},
		{"compare", "-p", a, filepath.Join(dir, "missing.qcow2")},
	} {
		ours, _, code := runQ(t, args...)
		theirs, _, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode || steps.ReplaceAllString(ours, "") != steps.ReplaceAllString(theirs, "") ||
			steps.FindString(ours) != steps.FindString(theirs) {
			t.Errorf("%q:\nqimg (exit %d): %q\nqemu-img (exit %d): %q", args, code, ours, qcode, theirs)
		}
	}
}

// TestCommit_BaseLikeQemu: commit -b BASE commits every layer above
// BASE into it, BASE named as its overlay records it or by another path,
// and leaves the layers above as they are (-b implies -d), as qemu-img
// does (qimg refused -b); a BASE outside the chain is refused with
// qemu-img's message.
func TestCommit_BaseLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	chain := func(p string) (top string) {
		qemuImage(t, filepath.Join(dir, p+"-b.qcow2"), "qcow2", "8M", "write -P 1 0 4M")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p+"-b.qcow2", "-F", "qcow2", filepath.Join(dir, p+"-m.qcow2"), "8M")
		qemuIO(t, filepath.Join(dir, p+"-m.qcow2"), "qcow2", "write -P 2 1M 1M", "write -z 3M 64k", "write -z 5M 64k")
		top = filepath.Join(dir, p+"-t.qcow2")
		// The top is larger than the layer below it: past that
		// layer's end the chain reads zeros, which go into BASE too.
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p+"-m.qcow2", "-F", "qcow2", top, "10M")
		qemuIO(t, top, "qcow2", "write -P 3 1536k 1M", "write -z 1M 64k", "write -P 4 9M 64k")
		return top
	}
	for _, how := range []string{"recorded", "absolute", "relative to the overlay"} {
		o, q := chain("o"+how), chain("q"+how)
		ob, qb := "o"+how+"-b.qcow2", "q"+how+"-b.qcow2"
		switch how {
		case "absolute":
			ob, qb = filepath.Join(dir, ob), filepath.Join(dir, qb)
		case "relative to the overlay":
			// Another name than the recorded one, relative to the
			// overlay's directory, as QEMU resolves it.
			ob, qb = "./"+ob, "./"+qb
		}
		a := mustQ(t, "commit", "-b", ob, o)
		b := testkit.MustRun(t, "qemu-img", "commit", "-b", qb, q)
		if a != b {
			t.Errorf("%s: qimg printed %q, qemu-img %q", how, a, b)
		}
		for _, l := range []string{"-t.qcow2", "-m.qcow2", "-b.qcow2"} {
			ours, theirs := filepath.Join(dir, "o"+how+l), filepath.Join(dir, "q"+how+l)
			testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
			mo := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", "qcow2", ours)
			mq := testkit.MustRun(t, "qemu-img", "map", "--output=json", "-f", "qcow2", theirs)
			strip := regexp.MustCompile(`, "offset": [0-9]+`)
			if l != "-m.qcow2" && strip.ReplaceAllString(mo, "") != strip.ReplaceAllString(mq, "") {
				t.Errorf("%s %s: qimg's map:\n%s\nqemu-img's:\n%s", how, l, mo, mq)
			}
		}
	}
	top := chain("x")
	lone := qemuImage(t, filepath.Join(dir, "lone.qcow2"), "qcow2", "1M") // no backing file
	for _, c := range []struct{ bad, top string }{{"nosuch.qcow2", top}, {top, top}, {"nosuch.qcow2", lone}} {
		bad, top := c.bad, c.top
		_, errOut, code := runQ(t, "commit", "-b", bad, top)
		_, qerr, qcode := testkit.Run(t, "qemu-img", "commit", "-b", bad, top)
		if code != qcode || strings.TrimPrefix(errOut, "qimg: commit: ") != strings.TrimPrefix(qerr, "qemu-img: ") {
			t.Errorf("-b %s: qimg exit %d %q; qemu-img exit %d %q", bad, code, errOut, qcode, qerr)
		}
	}
}

// TestBitmaps_InfoMeasureLikeQemu: info lists an image's persistent
// dirty bitmaps (flags, name, granularity) and measure counts the space
// they need in the output, as qemu-img does (qimg showed none and
// counted 0).
func TestBitmaps_InfoMeasureLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	p := qemuImage(t, filepath.Join(dir, "bm.qcow2"), "qcow2", "1G", "write -P 1 0 64k")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", p, "b0")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "a-longer-bitmap-name")
	testkit.MustRun(t, "qemu-img", "bitmap", "--add", "-g", "2M", "--disable", p, "off")
	odd := filepath.Join(dir, "odd[].qcow2") // "[]" in a string is no empty list
	testkit.MustRun(t, "cp", p, odd)
	for _, args := range [][]string{
		{"info", "--output=json", odd},
		{"info", p},
		{"info", "--output=json", p},
		{"info", "--backing-chain", "--output=json", p},
		{"measure", "-O", "qcow2", p},
		{"measure", "--output=json", "-O", "qcow2", "-o", "cluster_size=4k", p},
		{"measure", "-O", "qcow2", "-o", "cluster_size=2M", p},
	} {
		if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
			t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
		}
	}
}

// TestConvert_CopyOffloadLikeQemu: convert -C (copy offloading) copies
// the source's data as it is, zeros written as data included, as
// qemu-img does (qimg refused -C), and is refused with -c and with -S as
// qemu-img refuses it.
func TestConvert_CopyOffloadLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "8M", "write -P 1 0 1M", "write -z 2M 64k", "write -P 0 6M 64k")
	n := 0
	for _, opts := range [][]string{{"-O", "qcow2"}, {"-O", "raw"}, {"-O", "qcow2", "-o", "cluster_size=4k"}} {
		n++
		ours, theirs := filepath.Join(dir, fmt.Sprintf("o%d", n)), filepath.Join(dir, fmt.Sprintf("q%d", n))
		args := append([]string{"convert", "-C"}, opts...)
		mustQ(t, append(args, src, ours)...)
		testkit.MustRun(t, "qemu-img", append(args, src, theirs)...)
		testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		strip := regexp.MustCompile(`, "offset": [0-9]+`)
		a := testkit.MustRun(t, "qemu-img", "map", "--output=json", ours)
		b := testkit.MustRun(t, "qemu-img", "map", "--output=json", theirs)
		if opts[1] != "raw" { // a raw file's offsets are the guest's
			a, b = strip.ReplaceAllString(a, ""), strip.ReplaceAllString(b, "")
		}
		if a != b {
			t.Errorf("%q: qimg's map:\n%s\nqemu-img's:\n%s", args, a, b)
		}
	}
	for _, opts := range [][]string{{"-C", "-c", "-O", "qcow2"}, {"-C", "-S", "0", "-O", "raw"}} {
		out := filepath.Join(dir, "refused")
		args := append(append([]string{"convert"}, opts...), src, out)
		_, errOut, code := runQ(t, args...)
		_, qerr, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode || strings.TrimPrefix(errOut, "qimg: convert: ") != strings.TrimPrefix(qerr, "qemu-img: ") {
			t.Errorf("%q: qimg exit %d %q; qemu-img exit %d %q", opts, code, errOut, qcode, qerr)
		}
	}
}

// TestRateLimit_LikeQemu: convert -r and commit -r pace the writes to
// RATE bytes per second, as qemu-img does (qimg refused -r); the output
// is the same as without it, and a bad RATE is refused with qemu-img's
// exit code.
func TestRateLimit_LikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "4M", "write -P 1 0 256k", "write -P 2 1M 256k")
	start := time.Now()
	mustQ(t, "convert", "-r", "1M", "-O", "qcow2", src, filepath.Join(dir, "o.qcow2"))
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("convert -r 1M of 512 KiB took %v", d)
	}
	testkit.MustRun(t, "qemu-img", "convert", "-r", "1M", "-O", "qcow2", src, filepath.Join(dir, "q.qcow2"))
	testkit.MustRun(t, "qemu-img", "compare", "-s", filepath.Join(dir, "o.qcow2"), filepath.Join(dir, "q.qcow2"))

	top := qemuOverlay(t, filepath.Join(dir, "top.qcow2"), "src.qcow2", "qcow2", "write -P 3 2M 512k")
	start = time.Now()
	if out := mustQ(t, "commit", "-d", "-r", "1M", top); out != "Image committed.\n" {
		t.Errorf("commit -r printed %q", out)
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("commit -r 1M of 512 KiB took %v", d)
	}
	qemuIO(t, src, "qcow2", "read -P 3 2M 512k")

	for _, args := range [][]string{
		{"convert", "-r", "abc", "-O", "raw", src, filepath.Join(dir, "x.raw")},
		{"convert", "-r", "-5", "-O", "raw", src, filepath.Join(dir, "x.raw")},
		{"commit", "-r", "1x", top},
	} {
		_, _, code := runQ(t, args...)
		_, _, qcode := testkit.Run(t, "qemu-img", args...)
		if code != qcode {
			t.Errorf("%q: qimg exit %d, qemu-img %d", args, code, qcode)
		}
	}
}

// TestSnapshotParam_LikeQemu: convert -l and measure -l read an internal
// snapshot (by ID or name, or snapshot.id=/snapshot.name=) as qemu-img
// does, at the image's current size (qimg refused convert -l, and
// measure -l measured the active layer, then refused); a missing
// snapshot, an unknown key and a raw image are refused with qemu-img's
// exit code.
func TestSnapshotParam_LikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	p := qemuImage(t, filepath.Join(dir, "s.qcow2"), "qcow2", "8M", "write -P 1 0 1M", "write -c -P 2 2M 64k", "write -z 3M 64k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "small", p)
	testkit.MustRun(t, "qemu-img", "resize", "-q", p, "32M")
	qemuIO(t, p, "qcow2", "write -P 3 512k 1M", "write -P 4 20M 1M")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "big", p)
	qemuIO(t, p, "qcow2", "write -P 5 0 4M")
	strip := regexp.MustCompile(`, "offset": [0-9]+`)
	n := 0
	for _, l := range []string{"small", "2", "snapshot.name=big", "snapshot.id=1", "snapshot.id=2,snapshot.name=big"} {
		for _, f := range []string{"qcow2", "raw"} {
			n++
			ours, theirs := filepath.Join(dir, fmt.Sprintf("o%d", n)), filepath.Join(dir, fmt.Sprintf("q%d", n))
			args := []string{"convert", "-l", l, "-O", f, p}
			mustQ(t, append(args, ours)...)
			testkit.MustRun(t, "qemu-img", append(args, theirs)...)
			testkit.MustRun(t, "qemu-img", "compare", "-f", f, "-F", f, ours, theirs)
			a := strip.ReplaceAllString(testkit.MustRun(t, "qemu-img", "map", "-f", f, "--output=json", ours), "")
			b := strip.ReplaceAllString(testkit.MustRun(t, "qemu-img", "map", "-f", f, "--output=json", theirs), "")
			if a != b {
				t.Errorf("%q: qimg's map:\n%s\nqemu-img's:\n%s", args, a, b)
			}
		}
		for _, args := range [][]string{{"measure", "-O", "qcow2", "-l", l, p}, {"measure", "--output=json", "-l", l, p}} {
			if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
				t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
			}
		}
	}
	raw := qemuImage(t, filepath.Join(dir, "r.raw"), "raw", "1M")
	for _, c := range []struct{ l, img string }{{"nosuch", p}, {"snapshot.id=1,snapshot.name=big", p}, {"snapshot.bogus=1", p}, {"small", raw}, {"snapshot.id=,snapshot.name=big", p}, {"snapshot.name=", p}} {
		for _, args := range [][]string{
			{"convert", "-l", c.l, "-O", "raw", c.img, filepath.Join(dir, "refused.raw")},
			{"measure", "-l", c.l, c.img},
		} {
			_, errOut, code := runQ(t, args...)
			_, qerr, qcode := testkit.Run(t, "qemu-img", args...)
			ours := strings.TrimPrefix(errOut, "qimg: "+args[0]+": ")
			theirs := strings.ReplaceAll(strings.TrimPrefix(qerr, "qemu-img: "), "\nqemu-img: ", "; ")
			if code != qcode || ours != theirs {
				t.Errorf("%q: qimg exit %d %q; qemu-img exit %d %q", args, code, errOut, qcode, qerr)
			}
			if _, err := os.Stat(filepath.Join(dir, "refused.raw")); err == nil {
				t.Errorf("%q: the output was created", args)
				os.Remove(filepath.Join(dir, "refused.raw"))
			}
		}
	}
}

// TestConvert_SalvageLikeQemu: convert --salvage turns what cannot be
// read into zeros, sector by sector, with a warning for each (none with
// -q), and succeeds, as qemu-img does (qimg refused --salvage); without
// it both tools fail.
func TestConvert_SalvageLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	dir := testkit.Dir(t) // the damaged source is not for checkAll
	// 8M: a run of zeros longer than convert's buffer (2 MiB) follows
	// the data (its slice of the buffer failed: "internal error").
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "8M", "write -c -P 7 0 64k", "write -P 8 64k 64k")
	damage(t, src, func(f imageFile) {
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		e := f.u64(l2)
		f.write(int64(e&(1<<54-1)), bytes.Repeat([]byte{0xff}, 64)) // the compressed bytes (64 KiB clusters)
	})
	warning := regexp.MustCompile(`(?m)^(?:qimg: convert|qemu-img): warning: (error while reading offset [0-9]+):.*$`)
	for _, opts := range [][]string{{"-O", "raw"}, {"-O", "qcow2", "-c"}, {"-O", "qcow2"}, {"-q", "-O", "raw"}} {
		ours, theirs := filepath.Join(dir, "o"), filepath.Join(dir, "q")
		args := append([]string{"convert", "--salvage"}, opts...)
		_, errOut, code := runQ(t, append(args, src, ours)...)
		_, qerr, qcode := testkit.Run(t, "qemu-img", append(args, src, theirs)...)
		a, b := warning.FindAllStringSubmatch(errOut, -1), warning.FindAllStringSubmatch(qerr, -1)
		same := len(a) == len(b)
		for i := 0; same && i < len(a); i++ {
			same = a[i][1] == b[i][1]
		}
		if code != 0 || qcode != 0 || !same || (opts[0] == "-q") != (len(a) == 0) {
			t.Errorf("%q: qimg exit %d, %d warnings; qemu-img exit %d, %d warnings\n%.300s", args, code, len(a), qcode, len(b), errOut)
			continue
		}
		testkit.MustRun(t, "qemu-img", "compare", ours, theirs)
		if opts[len(opts)-1] != "raw" {
			testkit.QemuCheck(t, ours) // the output is no damaged image
		}
		os.Remove(ours)
		os.Remove(theirs)
	}
	_, _, code := runQ(t, "convert", "-O", "raw", src, filepath.Join(dir, "o"))
	_, _, qcode := testkit.Run(t, "qemu-img", "convert", "-O", "raw", src, filepath.Join(dir, "q"))
	if code != 1 || qcode != 1 {
		t.Errorf("without --salvage: qimg exit %d, qemu-img %d", code, qcode)
	}
}

// TestJSON_StringsLikeQemu: the strings of info's and check's JSON are
// escaped as QEMU escapes them (qimg escaped & < > as \u0026..., wrote
// other characters than ASCII as they are, and control characters in
// lower-case hex).
func TestJSON_StringsLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	for _, name := range []string{"a&b<c>.qcow2", "x\x7f\b\f\x1f\U0001F600\\u.qcow2", "u\u00e9\x01.qcow2", "q\"uo\te.qcow2", "inv\xff\xfe.qcow2"} {
		p := qemuImage(t, filepath.Join(dir, name), "qcow2", "1M", "write 0 64k")
		for _, args := range [][]string{{"info", "--output=json", p}, {"check", "--output=json", p}} {
			if ours, theirs := qimgAndQemu(t, args...); ours != theirs {
				t.Errorf("%q:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
			}
		}
	}
}

// TestRaw_PreallocationLikeQemu: create -f raw and convert -O raw take
// -o preallocation=falloc|full as qemu-img does (qimg refused them): the
// file is allocated whole; create's "Formatting" line names the mode
// when it is given, off too, as qemu-img's does.
func TestRaw_PreallocationLikeQemu(t *testing.T) {
	t.Parallel()
	dir := qemuDir(t)
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "4M", "write -P 1 0 1M", "write -P 0 2M 64k")
	blocks := func(p string) int64 {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks
	}
	for _, mode := range []string{"off", "falloc", "full"} {
		ours, theirs := filepath.Join(dir, "ours.raw"), filepath.Join(dir, "theirs.raw")
		args := []string{"create", "-f", "raw", "-o", "preallocation=" + mode}
		a := mustQ(t, append(args, ours, "1000k")...)
		b := testkit.MustRun(t, "qemu-img", append(args, theirs, "1000k")...)
		if strings.ReplaceAll(a, "ours", "theirs") != b {
			t.Errorf("%s: qimg printed %q, qemu-img %q", mode, a, b)
		}
		if blocks(ours) != blocks(theirs) {
			t.Errorf("create %s: qimg's file has %d blocks, qemu-img's %d", mode, blocks(ours), blocks(theirs))
		}
		os.Remove(ours)
		os.Remove(theirs)
		args = []string{"convert", "-O", "raw", "-o", "preallocation=" + mode, src}
		mustQ(t, append(args, ours)...)
		testkit.MustRun(t, "qemu-img", append(args, theirs)...)
		testkit.MustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ours, theirs)
		if blocks(ours) != blocks(theirs) {
			t.Errorf("convert %s: qimg's file has %d blocks, qemu-img's %d", mode, blocks(ours), blocks(theirs))
		}
		os.Remove(ours)
		os.Remove(theirs)
	}
}

// TestCheck_LeaksNeedRebuildLikeQemu: check -r leaks on an image whose
// refcount structures need a rebuild stops as qemu-img's does: exit 1,
// "Check failed: Input/output error", and no summary on stdout (qimg
// printed the summary, and "Check failed" alone); the image stays as
// it was.
func TestCheck_LeaksNeedRebuildLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t) // the images stay damaged
	orig := qemuImage(t, filepath.Join(dir, "orig.qcow2"), "qcow2", "4M", "write -P 1 0 64k")
	damage(t, orig, func(f imageFile) {
		l2 := int64(f.u64(int64(f.u64(40))) & entryMask)
		data := int64(f.u64(l2) & entryMask)
		rb := int64(f.u64(int64(f.u64(48))) & entryMask)
		f.write(rb+data/65536*2, []byte{0, 0}) // its refcount drops to 0
	})
	want := mustReadFile(t, orig)
	for _, out := range []string{"--output=human", "--output=json"} {
		ours, theirs := filepath.Join(dir, "o.qcow2"), filepath.Join(dir, "q.qcow2")
		testkit.MustRun(t, "cp", orig, ours)
		testkit.MustRun(t, "cp", orig, theirs)
		o, errOut, code := runQ(t, "check", "-r", "leaks", out, ours)
		q, qerr, qcode := testkit.Run(t, "qemu-img", "check", "-r", "leaks", out, theirs)
		if code != qcode || o != q || !strings.HasSuffix(errOut, "qimg: check: Check failed: Input/output error\n") ||
			!strings.HasSuffix(qerr, "qemu-img: Check failed: Input/output error\n") {
			t.Errorf("%s: qimg exit %d, stdout %q, stderr %q; qemu-img exit %d, stdout %q, stderr %q", out, code, o, errOut, qcode, q, qerr)
		}
		if !bytes.Equal(mustReadFile(t, ours), want) {
			t.Errorf("%s: check -r leaks changed the image", out)
		}
	}
}

// TestCommit_BaseTopShorterThanLayer: commit -b copies only the top's
// view, [0, top's size), into BASE, and grows BASE to the top's size at
// most, as qemu-img's commit job: a layer between them that is larger
// than the top had its data past the top's end written over BASE's, and
// BASE grown to that layer's size.
func TestCommit_BaseTopShorterThanLayer(t *testing.T) {
	dir := qemuDir(t)
	var bases []string
	for _, p := range []string{"o", "q"} {
		base := qemuImage(t, filepath.Join(dir, p+"-b.qcow2"), "qcow2", "10M", "write -P 1 0 10M")
		mid := qemuOverlay(t, filepath.Join(dir, p+"-m.qcow2"), p+"-b.qcow2", "qcow2")
		testkit.MustRun(t, "qemu-img", "resize", "-q", mid, "12M")
		qemuIO(t, mid, "qcow2", "write -P 2 1M 64k", "write -P 2 6M 64k", "write -P 2 11M 64k")
		top := filepath.Join(dir, p+"-t.qcow2")
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", p+"-m.qcow2", "-F", "qcow2", top, "5M")
		qemuIO(t, top, "qcow2", "write -P 3 2M 64k")
		if p == "o" {
			mustQ(t, "commit", "-b", base, top)
		} else {
			testkit.MustRun(t, "qemu-img", "commit", "-b", base, top)
		}
		bases = append(bases, base)
	}
	info := regexp.MustCompile(`virtual size: .*`)
	ours := info.FindString(testkit.MustRun(t, "qemu-img", "info", bases[0]))
	theirs := info.FindString(testkit.MustRun(t, "qemu-img", "info", bases[1]))
	if ours != theirs {
		t.Errorf("BASE's %s after qimg's commit, %s after qemu-img's", ours, theirs)
	}
	if _, _, code := testkit.Run(t, "qemu-img", "compare", "-s", bases[0], bases[1]); code != 0 {
		t.Errorf("BASE differs from qemu-img's (the intermediate layer's data past the top's end went into it)")
	}
}

// TestResize_RawUnderLock: resize of a raw file changes it while qimg
// holds the image's write lock, as qemu-img does (qimg let go of the
// lock first, then truncated the file, wrote the zeros of a full
// preallocation and an empty file's first block: another process could
// open the image in between and have its writes zeroed).
func TestResize_RawUnderLock(t *testing.T) {
	dir := testkit.Dir(t)
	p := filepath.Join(dir, "r.raw")
	if err := os.WriteFile(p, bytes.Repeat([]byte{7}, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	const size = 256 << 20
	done := make(chan int)
	go func() {
		_, _, code := runQ(t, "resize", "-q", "-f", "raw", "--preallocation=full", p, fmt.Sprint(size))
		done <- code
	}()
	seen := 0
	for running := true; running; {
		select {
		case code := <-done:
			if code != 0 {
				t.Fatalf("resize: exit %d", code)
			}
			running = false
		default:
			// Grown to its size and not yet allocated whole, the file is
			// having its zeros written, before and after the look at the
			// locks.
			writing := func() bool {
				var st syscall.Stat_t
				return syscall.Stat(p, &st) == nil && st.Size == size && st.Blocks*512 < size
			}
			if writing() {
				held := testkit.HoldsLockByte(p, 101)
				if !writing() {
					continue
				}
				if !held {
					t.Fatal("resize wrote the raw file's new part without holding its write lock")
				}
				seen++
			}
			time.Sleep(time.Millisecond)
		}
	}
	if seen == 0 {
		t.Skip("the resize was over before the file was seen at its new size")
	}
}

// TestConvert_SalvageBlockStatus: convert --salvage of an image whose
// block status cannot be read (an L1 entry naming an unaligned L2 table)
// succeeds as qemu-img's does, the sectors it cannot tell about read as
// zeros with a warning each (qimg mapped the whole image before
// converting, and failed on the first error as without --salvage).
func TestConvert_SalvageBlockStatus(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t) // the damaged source is not for checkAll
	src := qemuImage(t, filepath.Join(dir, "src.qcow2"), "qcow2", "256k", "write -P 7 0 64k", "write -P 8 192k 64k")
	damage(t, src, func(f imageFile) {
		l1 := int64(f.u64(40))
		f.putU64(l1, f.u64(l1)+512)
	})
	status := regexp.MustCompile(`(?m)^(?:qimg: convert|qemu-img): warning: error while reading block status at offset ([0-9]+):`)
	ours, theirs := filepath.Join(dir, "o.raw"), filepath.Join(dir, "q.raw")
	_, errOut, code := runQ(t, "convert", "--salvage", "-O", "raw", src, ours)
	_, qerr, qcode := testkit.Run(t, "qemu-img", "convert", "--salvage", "-O", "raw", src, theirs)
	if code != qcode {
		t.Fatalf("qimg exit %d %.300q; qemu-img exit %d %.300q", code, errOut, qcode, qerr)
	}
	if a, b := len(status.FindAllString(errOut, -1)), len(status.FindAllString(qerr, -1)); a == 0 || b == 0 {
		t.Errorf("block status warnings: qimg %d, qemu-img %d", a, b)
	}
	testkit.MustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", ours, theirs)
}

// TestCommit_BaseChainLoop: commit -b on a backing chain that loops
// fails, as the engine refuses such a chain (qimg opened the layers of
// the loop one after another without end, looking for BASE).
func TestCommit_BaseChainLoop(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t) // the chain loops: not for checkAll
	qemuImage(t, filepath.Join(dir, "a.qcow2"), "qcow2", "1M")
	qemuOverlay(t, filepath.Join(dir, "b.qcow2"), "a.qcow2", "qcow2")
	top := qemuOverlay(t, filepath.Join(dir, "c.qcow2"), "b.qcow2", "qcow2")
	testkit.MustRun(t, "qemu-img", "rebase", "-q", "-u", "-b", "c.qcow2", "-F", "qcow2", filepath.Join(dir, "a.qcow2"))
	for _, base := range []string{filepath.Join(dir, "nosuch.qcow2"), filepath.Join(dir, "a.qcow2")} {
		done := make(chan string, 1)
		go func() {
			_, errOut, code := runQ(t, "commit", "-b", base, top)
			done <- fmt.Sprintf("exit %d: %s", code, errOut)
		}()
		select {
		case res := <-done:
			if !strings.Contains(res, "infinite loop") {
				t.Errorf("-b %s: %s", filepath.Base(base), res)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("-b %s: commit still running after 30 s", filepath.Base(base))
		}
	}
}
