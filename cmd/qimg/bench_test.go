package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// benchTime is the run's duration in "Run completed in 0.012 seconds.".
var benchTime = regexp.MustCompile(`in [0-9.]+ seconds`)

// TestBench_LikeQemu: qimg bench is qemu-img bench: the same two lines
// for the same options (counts read as qemu_strtoul, 0x10 is 16; -c 0
// sends nothing; sizes as cvtnum; -S; --pattern, which a read test
// ignores; --flush-interval and --no-drain, alone a no-op; -t, -i, -U,
// -f, --image-opts), the same refusals in its words, and after a write
// test the same image (qemu-img compare) that qemu-img check passes.
// Not compared: a queue depth of 0 (qemu-img hangs; qimg refuses it),
// -n (Linux AIO; qimg refuses it), -s 0. qimg had no bench command.
func TestBench_LikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	t.Parallel()
	d := workDir(t)
	tmpl := filepath.Join(d, "tmpl.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", tmpl, "16M")
	qio(t, tmpl, "write -P 3 0 1M")
	for _, a := range []string{
		"-c 100 -w", "-c 100", "-c 100 -d 4 -s 8k -S 16k -o 4096 -w", "-c 100 --pattern=0x5a -w -S 12k",
		"-c 100 --flush-interval=10 -w", "-c 100 --flush-interval=10", "-c 100 --flush-interval=64 -w --no-drain",
		"-c 100 --no-drain", "-c 0", "-c 0x10", "-c -1", "-c x", "-d x", "-o x", "-s x", "-s 3G", "-S x",
		"--pattern=300", "--flush-interval=x", "-i x", "-t x", "-c 10 -t none", "-c 10 -t writethrough -w",
		"-c 10 -t unsafe -w", "-c 10 -i threads -w", "-c 10 -q", "-c 10 -U", "-c 10 -w -U", "-c 10 -f raw",
		"-c 10 -f bogus", "-c 10 --pattern=3", "-c 10 -o 2M -s 1M -w", "-c 10 -S 0 -w", "-c 10 IMG IMG", "-c 10 NONE",
		"-c 10 --image-opts driver=qcow2,file.filename=IMG",
	} {
		ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
		cp(t, tmpl, ours)
		cp(t, tmpl, theirs)
		args := func(img string) []string {
			f := strings.Fields(strings.NewReplacer("IMG", img, "NONE", "").Replace(a))
			if !strings.Contains(a, "IMG") && !strings.Contains(a, "NONE") {
				f = append(f, img)
			}
			return append([]string{"bench"}, f...)
		}
		o, e, code := runQ(t, args(ours)...)
		qo, qe, qcode := testkit.Run(t, "qemu-img", args(theirs)...)
		norm := func(s string) string {
			return strings.NewReplacer(ours, "IMG", theirs, "IMG").Replace(benchTime.ReplaceAllString(s, "in T seconds"))
		}
		oe := strings.ReplaceAll(usageSuffix.ReplaceAllString(strings.TrimSuffix(e, "\n"), ""), "; ", "\nqemu-img: ")
		if e != "" {
			oe = strings.Replace(oe, "qimg: bench: ", "qemu-img: ", 1) + "\n"
		}
		if strings.HasPrefix(qe, "qemu-img: Expecting one image file name") {
			qe = "qemu-img: Expecting one image file name\n" // qimg's usage line follows it, not qemu-img's --help line
		}
		if code != qcode || norm(o) != norm(qo) || norm(oe) != norm(qe) {
			t.Errorf("%s: qimg exit %d\n%s%s\nqemu-img exit %d\n%s%s", a, code, o, e, qcode, qo, qe)
			continue
		}
		if code == 0 && strings.Contains(a, "-w") {
			testkit.MustRun(t, "qemu-img", "compare", "-q", ours, theirs)
		}
	}
}
