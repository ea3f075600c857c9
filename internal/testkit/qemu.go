package testkit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The QEMU oracle. CI installs qemu-utils; where the tools are missing a
// test that needs them skips (NeedQemu) and a check of an image the test
// made by itself is left out (QemuCheck, QemuCheckNoCorruption).

var (
	haveQemuImg = sync.OnceValue(func() bool { _, err := exec.LookPath("qemu-img"); return err == nil })
	haveQemuIO  = sync.OnceValue(func() bool { _, err := exec.LookPath("qemu-io"); return err == nil })
)

// HaveQemu reports whether qemu-img and qemu-io are on PATH. In CI
// (CI=true) the oracle is required: without it the test binary exits
// with an error instead of letting the interop tests skip.
func HaveQemu() bool {
	ok := haveQemuImg() && haveQemuIO()
	if !ok && os.Getenv("CI") == "true" {
		ciMissingOracle()
	}
	return ok
}

var ciMissingOracle = sync.OnceFunc(func() {
	fmt.Fprintln(os.Stderr, "testkit: CI=true but qemu-img/qemu-io are not on PATH: the QEMU oracle is required in CI (install qemu-utils)")
	os.Exit(2)
})

// NeedQemu skips t unless qemu-img and qemu-io are on PATH.
func NeedQemu(t testing.TB) {
	t.Helper()
	if !HaveQemu() {
		t.Skip("qemu-img/qemu-io not on PATH")
	}
}

// NeedTools skips t unless every tool is on PATH; in CI (CI=true, where
// .ci/run installs them) a missing tool fails t instead.
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(t, tool+" not installed")
		}
	}
}

// Missing skips t for a missing test dependency, or fails it in CI.
func Missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: .ci/run should have installed it)", why)
	}
	t.Skip(why)
}

// Run runs an external command and returns its stdout, its stderr and its
// exit code; a command that cannot be started fails t.
//
// A QEMU tool refused with a lock error (or a failed PBKDF2 benchmark,
// retryable) is run again a few times first:
// tests run qimg in-process beside other tests that start commands, and a
// command forked at the moment qimg closed an image holds a copy of its
// descriptor, and so its lock, until it execs (see uring's lock.go).
func Run(t testing.TB, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	for i := 0; ; i++ {
		stdout, stderr, code = run1(t, name, args...)
		if code == 0 || i == 7 || !retryable(stderr) {
			return stdout, stderr, code
		}
		// Backing off: under a loaded machine (make test's parallel
		// packages) QEMU's PBKDF2 benchmark failed four tries in a row.
		time.Sleep(time.Duration(50*(i+1)) * time.Millisecond)
	}
}

// RunOnce is Run without its retries: for a test whose subject is the
// lock error (each retry of a run that must be refused cost up to 1.4 s).
func RunOnce(t testing.TB, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return run1(t, name, args...)
}

// retryable reports a QEMU failure that says nothing about the image:
// a lock held by a forked child (above), or QEMU's PBKDF2 benchmark
// (LUKS create with a short encrypt.iter-time) that could not measure
// CPU time on a loaded machine.
func retryable(stderr string) bool {
	return strings.Contains(stderr, "Is another process using the image") ||
		strings.Contains(stderr, "Unable to get accurate CPU usage")
}

func run1(t testing.TB, name string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return o.String(), e.String(), 0
	case errors.As(err, &ee):
		return o.String(), e.String(), ee.ExitCode()
	}
	t.Fatalf("%s %q: %v", name, args, err)
	return "", "", -1
}

// MustRun runs an external command and returns its stdout; a non-zero
// exit fails t, and so does a qemu-io whose read -P found other data
// (qemu-io reports that in its output and still exits 0).
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	o, e, code := Run(t, name, args...)
	if code != 0 {
		t.Fatalf("%s %q: exit %d\nstdout: %s\nstderr: %s", name, args, code, o, e)
	}
	if name == "qemu-io" && strings.Contains(o+e, "Pattern verification failed") {
		t.Fatalf("%s %q:\n%s%s", name, args, o, e)
	}
	return o
}

// QemuCheckResult is what qemu-img check --output=json said about an image.
type QemuCheckResult struct {
	Corruptions int `json:"corruptions"`
	Leaks       int `json:"leaks"`
	CheckErrors int `json:"check-errors"`
	// Exit is qemu-img's exit code: 0 clean, 1 check failed, 2
	// corruptions, 3 leaks only.
	Exit int `json:"-"`
	// Stdout holds the JSON; Stderr one line per leak or corruption.
	Stdout, Stderr string `json:"-"`
}

// Clean is the verdict for an image a test closed: exit 0, no
// corruption, no leak, no check error and not a word on stderr.
func (r QemuCheckResult) Clean() bool {
	return r.Exit == 0 && r.Corruptions+r.Leaks+r.CheckErrors == 0 && strings.TrimSpace(r.Stderr) == ""
}

// NoCorruption is the verdict for an image a crash or a fault left:
// leaked clusters are allowed (exit 0 or 3), corruption and check errors
// are not.
func (r QemuCheckResult) NoCorruption() bool {
	return (r.Exit == 0 || r.Exit == 3) && r.Corruptions+r.CheckErrors == 0
}

func (r QemuCheckResult) String() string {
	return fmt.Sprintf("exit %d, %d corruptions, %d leaks, %d check errors", r.Exit, r.Corruptions, r.Leaks, r.CheckErrors)
}

// QemuImgCheck runs qemu-img check --output=json on path. The error says
// that qemu-img could not run or printed no JSON; the result holds the
// exit code and the output either way.
func QemuImgCheck(path string) (QemuCheckResult, error) {
	return qemuImgCheck(path, path)
}

// qemuImgCheck runs qemu-img check --output=json with args before the
// image argument (the last of args); path names the image in errors.
func qemuImgCheck(path string, args ...string) (QemuCheckResult, error) {
	var o, e bytes.Buffer
	var err error
	for i := 0; i < 4; i++ { // a lock error is tried again, as in Run
		o.Reset()
		e.Reset()
		cmd := exec.Command("qemu-img", append([]string{"check", "--output=json"}, args...)...)
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		if err == nil || !strings.Contains(e.String(), "Is another process using the image") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var r QemuCheckResult
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Exit = ee.ExitCode()
	case err != nil:
		return r, fmt.Errorf("qemu-img check %s: %w", path, err)
	}
	r.Stdout, r.Stderr = o.String(), e.String()
	if err := json.Unmarshal(o.Bytes(), &r); err != nil {
		return r, fmt.Errorf("qemu-img check %s: exit %d, no JSON (%v):\n%s%s", path, r.Exit, err, r.Stdout, r.Stderr)
	}
	return r, nil
}

// QemuCheckReport runs qemu-img check on path and returns nil when ok
// accepts the result, else an error with qemu-img's own report. Without
// qemu-img it returns nil.
func QemuCheckReport(path string, ok func(QemuCheckResult) bool) error {
	if !haveQemuImg() && !HaveQemu() {
		return nil
	}
	r, err := QemuImgCheck(path)
	if err != nil {
		return err
	}
	if ok(r) {
		return nil
	}
	human, _ := exec.Command("qemu-img", "check", path).CombinedOutput()
	return fmt.Errorf("qemu-img check %s: %s\n%s%s", path, r, r.Stderr, human)
}

// QemuCheck fails t unless qemu-img check finds path clean (Clean).
// Without qemu-img it does nothing.
func QemuCheck(t testing.TB, path string) {
	t.Helper()
	if err := QemuCheckReport(path, QemuCheckResult.Clean); err != nil {
		t.Fatal(err)
	}
}

// QemuCheckNoCorruption reports an error on t unless qemu-img check finds
// no corruption in path (NoCorruption: leaks are allowed), and returns
// whether it did. Without qemu-img it returns true.
func QemuCheckNoCorruption(t testing.TB, path string) bool {
	t.Helper()
	if err := QemuCheckReport(path, QemuCheckResult.NoCorruption); err != nil {
		t.Error(err)
		return false
	}
	return true
}
