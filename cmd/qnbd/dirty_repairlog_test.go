package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDirtyImageRepairLines: serving an image left dirty by a crash
// (lazy refcounts) repairs it at open and prints the repair's lines on
// stderr, as qemu-nbd (and qemu-io, the oracle here: the same lines)
// print them; qnbd printed none. Also through --image-opts.
func TestDirtyImageRepairLines(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	for _, opts := range []bool{false, true} {
		dir := shortDir(t)
		img, ref := filepath.Join(dir, "d.qcow2"), filepath.Join(dir, "ref.qcow2")
		sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "4M")
		exec.Command("qemu-io", "-c", "write -P 5 0 1M", "-c", "abort", img).Run() // a crash
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ref, b, 0o644); err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		c := exec.Command("qemu-io", "-c", "read -P 5 0 1M", ref)
		c.Stderr = &want
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		arg := img
		var args []string
		if opts {
			args, arg = []string{"--image-opts"}, "driver=qcow2,file.filename="+img
		}
		s := startUnix(t, dir, "d", append(args, arg)...)
		s.stop()
		if got := s.stderr.String(); got != want.String() || !strings.Contains(got, "Rebuilding refcount structure") {
			t.Errorf("--image-opts %v: qnbd's stderr:\n%s\nqemu-io's:\n%s", opts, got, want.String())
		}
		check(t, img)
	}
}
