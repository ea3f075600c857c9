package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRun_OpenErrorsLikeQemu: an image that does not open fails in
// qemu-img bench's words ("Could not open 'x': ..."), not Go's ("stat x:
// no such file or directory") or the engine's ("qcow2: not a qcow2
// image: magic = ..."); qemu-img bench, when installed, says the same.
func TestRun_OpenErrorsLikeQemu(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.qcow2")
	text := filepath.Join(dir, "text")
	if err := os.WriteFile(text, []byte("not an image\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, haveQemu := exec.LookPath("qemu-img")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", "10", missing}, "Could not open '" + missing + "': Could not open '" + missing + "': No such file or directory"},
		{[]string{"-c", "10", "-f", "qcow2", text}, "Could not open '" + text + "': Image is not in qcow2 format"},
	} {
		code, out, errOut := runCLI(t, c.args...)
		if code != 1 || out != "" || errOut != "qbench: "+c.want+"\n" {
			t.Errorf("qbench %q: exit %d, stdout %q, stderr %q; want %q", c.args, code, out, errOut, c.want)
		}
		if haveQemu != nil {
			continue
		}
		q, _ := exec.Command("qemu-img", append([]string{"bench"}, c.args...)...).CombinedOutput()
		if got := strings.TrimPrefix(strings.TrimSpace(string(q)), "qemu-img: "); got != c.want {
			t.Errorf("qemu-img bench %q: %q, want %q", c.args, got, c.want)
		}
	}
}
