package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// convertSweepFlags are the convert options TestConvert_ArgSweepLikeQemu
// combines, two at a time (a BASE word is the backing file, TGT the
// --target-image-opts string of the existing output).
var convertSweepFlags = [][]string{
	{"-n"}, {"-c"}, {"-C"}, {"-S", "0"}, {"--salvage"}, {"--target-image-opts"}, {"--target-is-zero"},
	{"-B", "BASE", "-F", "qcow2"}, {"-B", "BASE"}, {"--bitmaps"}, {"--skip-broken-bitmaps"}, {"-l", "s1"},
	{"-l", "snapshot.id=1"}, {"-O", "raw"}, {"-O", "qcow2"}, {"-o", "cluster_size=4k"},
	{"--image-opts"}, {"-f", "qcow2"}, {"-o", "preallocation=full"}, {"-S", "3"}, {"-S", "abc"},
}

// TestConvert_ArgSweepLikeQemu: every pair of convert's options, with
// one input and with two, ends as qemu-img 7.2's convert ends: the same
// exit code, and for a failure the same message. None panics, and an
// output is left only where qemu-img leaves one and qimg succeeded
// (qimg removes a new output when it fails). Each run starts from
// the same files: a qcow2 input with an internal snapshot, an existing
// 4M qcow2 output (for -n) and no new output.
func TestConvert_ArgSweepLikeQemu(t *testing.T) {
	t.Parallel()
	d := qemuDir(t)
	in := qemuImage(t, filepath.Join(d, "in.qcow2"), "qcow2", "1M", "write -P 1 0 64k")
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", in)
	in2 := qemuImage(t, filepath.Join(d, "in2.qcow2"), "qcow2", "1M", "write -P 2 64k 64k")
	base := qemuImage(t, filepath.Join(d, "base.qcow2"), "qcow2", "1M")
	tgt := qemuImage(t, filepath.Join(d, "tgt.qcow2"), "qcow2", "4M")
	pristine, err := os.ReadFile(tgt)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(d, "out")
	fresh := func() {
		os.Remove(out)
		if err := os.WriteFile(tgt, pristine, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	multi := func(f []string) bool { // options that matter with several inputs
		switch f[0] {
		case "-B", "--bitmaps", "-l", "-c", "-n", "--target-image-opts":
			return true
		}
		return false
	}
	for i := range convertSweepFlags {
		for j := i + 1; j < len(convertSweepFlags); j++ {
			for k, ins := range [][]string{{in}, {in, in2}} {
				if k == 1 && !multi(convertSweepFlags[i]) && !multi(convertSweepFlags[j]) {
					continue
				}
				var args []string
				skip, opts, imgOpts := false, false, false
				for _, f := range append(append([]string{}, convertSweepFlags[i]...), convertSweepFlags[j]...) {
					skip = skip || f == "-n"
					opts = opts || f == "--target-image-opts"
					imgOpts = imgOpts || f == "--image-opts"
					args = append(args, strings.ReplaceAll(f, "BASE", base))
				}
				for _, p := range ins {
					if imgOpts {
						p = "driver=qcow2,file.filename=" + p
					}
					args = append(args, p)
				}
				switch {
				case opts:
					args = append(args, "driver=qcow2,file.filename="+tgt)
				case skip:
					args = append(args, tgt)
				default:
					args = append(args, out)
				}
				what := strings.Join(args, " ")
				fresh()
				_, qe, qcode := testkit.Run(t, "qemu-img", append([]string{"convert"}, args...)...)
				_, qerr := os.Stat(out)
				fresh()
				_, e, code := runQLocked(t, append([]string{"convert"}, args...)...)
				_, err := os.Stat(out)
				if code != qcode || (qcode != 0 && ourMessage(e) != qemuMessage(qe)) {
					t.Errorf("%s: exit %d %q; qemu-img: exit %d %q", what, code, ourMessage(e), qcode, qemuMessage(qe))
				}
				// qimg removes an output it created when it fails
				// later (qemu-img leaves it, e.g. for --bitmaps into
				// raw).
				if err == nil && (qerr != nil || code != 0) {
					t.Errorf("%s: output left (exit %d); qemu-img's: %v", what, code, qerr == nil)
				}
			}
		}
	}
}
