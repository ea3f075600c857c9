package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestWriteDirtyImageRepairLines: qemu-img bench -w opens the
// image read-write, so an image left dirty (lazy refcounts) is repaired
// with its lines on stderr ("ERROR cluster ...", "Rebuilding refcount
// structure", ...); qbench -w printed none.
func TestWriteDirtyImageRepairLines(t *testing.T) {
	if !testkit.HaveQemu() {
		t.Skip("needs QEMU")
	}
	dir := t.TempDir()
	for _, spec := range []bool{false, true} {
		p, q := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "q.qcow2")
		for _, f := range []string{p, q} {
			testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", f, "4M")
			testkit.Run(t, "qemu-io", "-c", "write -P 5 0 1M", "-c", "abort", f) // a crash
		}
		args := []string{"-w", "-c", "4", "-s", "4k"}
		ours, theirs := append(append([]string{}, args...), p), append(append([]string{"bench"}, args...), q)
		if spec {
			ours = append(append([]string{}, args...), "--image-opts", "driver=qcow2,file.filename="+p)
			theirs = append(append([]string{"bench"}, args...), "--image-opts", "driver=qcow2,file.filename="+q)
		}
		code, _, e := runCLI(t, ours...)
		qe, _ := exec.Command("qemu-img", theirs...).CombinedOutput()
		want := strings.Split(string(qe), "Sending")[0]
		if code != 0 || !strings.HasPrefix(e, want) || !strings.Contains(e, "Rebuilding refcount structure") {
			t.Errorf("%q: exit %d, stderr:\n%s\nqemu-img's lines:\n%s", ours, code, e, want)
		}
		testkit.QemuCheck(t, p)
	}
}
