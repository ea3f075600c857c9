package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestRawRequestPastEndFails: offsets wrap at the image size (QEMU
// 7.2), so a request near the end can run past it. qemu-img bench fails
// it with EIO and leaves a raw image's size alone; qbench grew the raw
// file (write) or read short and exited 0.
func TestRawRequestPastEndFails(t *testing.T) {
	const size = 1 << 20
	for _, mode := range []string{"--queue", "--workers"} {
		for _, write := range []bool{true, false} {
			dir := t.TempDir()
			p, q := filepath.Join(dir, "a.raw"), filepath.Join(dir, "q.raw")
			for _, f := range []string{p, q} {
				if err := os.WriteFile(f, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				os.Truncate(f, size)
			}
			args := []string{mode, "-f", "raw", "-c", "3", "-d", "1", "-s", "8k", "-S", "1044000"}
			if write {
				args = append(args, "-w", "--pattern", "0xab")
			}
			args = append(args, p)
			code, out, e := runCLI(t, args...)
			if code != 1 || !strings.Contains(e, "past the end of the image") || strings.Contains(out, "Run completed") {
				t.Errorf("%q: exit %d, stdout %q, stderr %q; want a failed request", args, code, out, e)
			}
			if fi, err := os.Stat(p); err != nil || fi.Size() != size {
				t.Errorf("%q: the raw image is now %d bytes (%v), want %d", args, fi.Size(), err, size)
			}
			if testkit.HaveQemu() {
				qa := append([]string{"bench"}, args[1:len(args)-1]...)
				qa = append(qa, q)
				if err := exec.Command("qemu-img", qa...).Run(); err == nil {
					t.Errorf("qemu-img %q succeeded", qa)
				}
			}
		}
	}
}
