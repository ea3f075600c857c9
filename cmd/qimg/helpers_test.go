package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qring/qring/internal/testkit"
)

// runQ runs the qimg CLI in-process.
func runQ(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return o.String(), e.String(), code
}

// runQLocked is runQ run again, a few times, while it is refused with a
// lock error: qimg runs in the test's process, and a command another
// test forks at the moment an earlier run closed the image holds a copy
// of its descriptor, and so its lock, until it execs (uring's lock.go;
// testkit.Run retries QEMU's tools likewise). For tests whose subject is
// not locking.
func runQLocked(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	for i := 0; ; i++ {
		stdout, stderr, code = runQ(t, args...)
		if code == 0 || i == 3 || !strings.Contains(stderr, "Is another process using the image") {
			return stdout, stderr, code
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mustQ runs qimg and fails the test on a non-zero exit.
func mustQ(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runQ(t, args...)
	if code != 0 {
		t.Fatalf("qimg %q: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	return out
}

// qimgAndQemu runs the same command through qimg and through qemu-img, and
// returns the output of each; either failing fails t.
func qimgAndQemu(t *testing.T, args ...string) (ours, qemu string) {
	t.Helper()
	return mustQ(t, args...), testkit.MustRun(t, "qemu-img", args...)
}

// workDir is a temporary directory (a testkit.Dir: kept when the test
// fails) whose qcow2 images must all pass qemu-img check when the test
// ends.
func workDir(t *testing.T) string {
	t.Helper()
	d := testkit.Dir(t)
	t.Cleanup(func() { checkAll(t, d) })
	return d
}

// qemuDir is the workDir of a test that compares with or checks through
// the QEMU tools: the test is skipped where they are not installed.
func qemuDir(t *testing.T) string {
	t.Helper()
	testkit.NeedQemu(t)
	return workDir(t)
}

// qemuImage creates an image of format fmt and the given size at path
// with qemu-img, runs each qemu-io command on it and returns path.
func qemuImage(t *testing.T, path, fmt, size string, cmds ...string) string {
	t.Helper()
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", fmt, path, size)
	qemuIO(t, path, fmt, cmds...)
	return path
}

// qemuOverlay creates a qcow2 image at path over backing (the name the
// header records, relative to path's directory) of format bfmt with
// qemu-img, runs each qemu-io command on it and returns path.
func qemuOverlay(t *testing.T, path, backing, bfmt string, cmds ...string) string {
	t.Helper()
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", bfmt, path)
	qemuIO(t, path, "qcow2", cmds...)
	return path
}

// qemuIO runs the qemu-io commands, if any, on the image of format fmt at
// path.
func qemuIO(t *testing.T, path, fmt string, cmds ...string) {
	t.Helper()
	if len(cmds) == 0 {
		return
	}
	args := []string{"-f", fmt}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	testkit.MustRun(t, "qemu-io", append(args, path)...)
}

func checkAll(t *testing.T, dir string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		b := make([]byte, 4)
		fh, err := os.Open(f)
		if err != nil {
			continue
		}
		fh.Read(b)
		fh.Close()
		if string(b) != "QFI\xfb" {
			continue
		}
		if err := testkit.QemuCheckReport(f, testkit.QemuCheckResult.Clean); err != nil {
			t.Errorf("at the end of the test: %v", err)
		}
		// And our own Check, through qimg check (exit 0: clean).
		if out, errOut, code := runQ(t, "check", "-U", f); code != 0 {
			t.Errorf("at the end of the test: qimg check %s: exit %d\n%s%s", f, code, out, errOut)
		}
	}
}

// splitWords splits a shell word list with "..." and '...' quoting.
func splitWords(s string) []string {
	var out []string
	var cur strings.Builder
	in, quote := false, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// dataImage creates a 4M qcow2 image called name in a new workDir, with
// its first 128k written (pattern 3), for a check case to damage.
func dataImage(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join(workDir(t), name)
	mustQ(t, "create", "-q", p, "4M")
	mustQ(t, "io", p, "-c", "write -P 3 0 128k")
	return p
}

// runImg runs a qemu-img command line with qimg (tool "qimg") or with
// qemu-img (any other tool), for the tests that run one after the other.
func runImg(t *testing.T, tool string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	if tool == "qimg" {
		return runQ(t, args...)
	}
	return testkit.Run(t, "qemu-img", args...)
}
