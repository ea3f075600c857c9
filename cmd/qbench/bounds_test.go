package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/internal/testkit/imgcheck"
	"github.com/qring/qring/qcow2"
)

// TestRun_OutOfBoundsRefused: a start offset at or past the end of the
// image, or an image too small for one request, is refused before any
// request (qemu-img sends them and fails with EIO: exit 1 both).
func TestRun_OutOfBoundsRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.qcow2")
	if code, _, e := runCLI(t, "--create", "1M", "-w", "-n", "1", p); code != 0 {
		t.Fatal(e)
	}
	qemu := testkit.HaveQemu()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "1M"}, "start offset 1048576 is at or past the end of the image (1048576 bytes)"},
		{[]string{"-o", "2M"}, "start offset 2097152 is at or past the end of the image"},
		{[]string{"-s", "2M"}, "image too small: a request of 2097152 bytes at offset 0"},
		{[]string{"-o", "1020k", "-s", "8k"}, "image too small: a request of 8192 bytes at offset 1044480"},
		{[]string{"-w", "-o", "1M"}, "start offset 1048576 is at or past the end"},
	} {
		args := append(append([]string{"-c", "4"}, tc.args...), p)
		code, out, e := runCLI(t, args...)
		if code != 1 || !strings.Contains(e, tc.want) || strings.Contains(out, "Run completed") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 1 and %q", args, code, out, e, tc.want)
		}
		if qemu {
			c := exec.Command("qemu-img", append([]string{"bench"}, args...)...)
			if err := c.Run(); err == nil {
				t.Errorf("qemu-img bench %q succeeded", args)
			}
		}
	}
	imgcheck.File(t, p, qcow2.Options{})
}

// TestRun_StepZero: -S 0 is a step of the request size, as in qemu-img
// 7.2 (step ?: bufsize): the same "Sending" line.
func TestRun_StepZero(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.qcow2")
	if code, _, e := runCLI(t, "--create", "1M", "-w", "-n", "1", p); code != 0 {
		t.Fatal(e)
	}
	code, out, e := runCLI(t, "-c", "8", "-s", "8k", "-S", "0", p)
	want := "Sending 8 read requests, 8192 bytes each, 64 in parallel (starting at offset 0, step size 8192)\n"
	if code != 0 || !strings.HasPrefix(out, want) {
		t.Fatalf("-S 0: exit %d, stderr %q, stdout:\n%s", code, e, out)
	}
	if testkit.HaveQemu() {
		q, err := exec.Command("qemu-img", "bench", "-c", "8", "-s", "8k", "-S", "0", p).Output()
		if err != nil || !strings.HasPrefix(string(q), want) {
			t.Errorf("qemu-img bench -S 0: %v\n%s", err, q)
		}
	}
	imgcheck.File(t, p, qcow2.Options{})
}

// TestRun_FileChildWithoutDriver: --image-opts and json: specs whose file
// child has only a filename open it as a host file (file.driver=file, as
// QEMU fills in).
func TestRun_FileChildWithoutDriver(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.qcow2")
	if code, _, e := runCLI(t, "--create", "1M", "-w", "-n", "1", p); code != 0 {
		t.Fatal(e)
	}
	for _, args := range [][]string{
		{"--image-opts", "driver=qcow2,file.filename=" + p},
		{`json:{"driver":"qcow2","file":{"filename":"` + p + `"}}`},
	} {
		if code, _, e := runCLI(t, append([]string{"-c", "16", "-q"}, args...)...); code != 0 {
			t.Errorf("%q: exit %d, %s", args, code, e)
		}
	}
	imgcheck.File(t, p, qcow2.Options{})
}

// TestRun_Version: --version prints the version line and exits 0.
func TestRun_Version(t *testing.T) {
	code, out, e := runCLI(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "qbench version ") || e != "" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, e)
	}
}

// TestRun_FormatOverJSONName: -f over a json: name is the root's driver
// (QEMU's priority of the options outside the name): a write benchmark
// with -f qcow2 over json:{"driver":"raw",...} of a qcow2 file writes
// through qcow2 (the raw driver wrote over its header); -f with
// --image-opts is refused, as qemu-img refuses it.
func TestRun_FormatOverJSONName(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.qcow2")
	if code, _, e := runCLI(t, "--create", "1M", "-w", "-n", "1", p); code != 0 {
		t.Fatal(e)
	}
	spec := `json:{"driver":"raw","file":{"driver":"file","filename":"` + p + `"}}`
	if code, _, e := runCLI(t, "-w", "-c", "16", "-q", "-f", "qcow2", spec); code != 0 {
		t.Fatalf("-f qcow2 over a json: name: exit %d, %s", code, e)
	}
	imgcheck.File(t, p, qcow2.Options{})
	if code, _, e := runCLI(t, "-c", "16", "-q", "-f", "qcow2", "--image-opts", "driver=qcow2,file.filename="+p); code == 0 || !strings.Contains(e, "mutually exclusive") {
		t.Errorf("-f with --image-opts: exit %d, %s", code, e)
	}
}
