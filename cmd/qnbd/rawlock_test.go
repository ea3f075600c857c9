package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestRawExportNoResize: while a raw image is served, writable or not,
// no one may resize it (qemu-nbd's export shares every permission but
// resize: its clients were told the size); others may still open it, as
// with qemu-nbd. Stopped, the server lets go.
func TestRawExportNoResize(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := shortDir(t)
	img := filepath.Join(dir, "r.raw")
	sh(t, "qemu-img", "create", "-f", "raw", img, "1M")
	for _, ro := range []bool{false, true} {
		args := []string{"-f", "raw", img}
		if ro {
			args = append([]string{"-r"}, args...)
		}
		s := startUnix(t, dir, "r", args...)
		if o, e, code := testkit.Run(t, "qemu-img", "resize", "-f", "raw", img, "2M"); code == 0 || !strings.Contains(e, `"resize" lock`) {
			t.Errorf("read-only %v: qemu-img resize of a served raw image: exit %d\n%s%s", ro, code, o, e)
		}
		sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 4k", img)
		s.stop()
	}
	sh(t, "qemu-img", "resize", "-f", "raw", img, "2M")
}
