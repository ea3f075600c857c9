package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestMeasure_ImageOptsAndSnapshot: measure opens its input with
// --object and --image-opts as qemu-img does (qimg took the option
// string for a file name), and -l SNAPSHOT never measures the active
// layer in the snapshot's stead (qimg ignored -l and printed the active
// layer's numbers).
func TestMeasure_ImageOptsAndSnapshot(t *testing.T) {
	dir := qemuDir(t)
	sn := qemuImage(t, filepath.Join(dir, "sn.qcow2"), "qcow2", "64M", "write 0 1M")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", sn)
	qemuIO(t, sn, "qcow2", "write 8M 8M")
	args := []string{"measure", "-O", "qcow2", "-l", "s1", sn}
	theirs := testkit.MustRun(t, "qemu-img", args...)
	if ours, _, code := runQ(t, args...); code == 0 && ours != theirs {
		t.Errorf("%q: qimg printed other numbers than qemu-img:\nqimg:\n%s\nqemu-img:\n%s", args, ours, theirs)
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
