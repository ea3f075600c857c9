package main

import (
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestSnapshot_NoFormatOptionLikeQemu: qemu-img 7.2's snapshot has no
// -f and refuses it (exit 1); qimg took it (found by a helper's sweep).
func TestSnapshot_NoFormatOptionLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := workDir(t)
	img := filepath.Join(d, "a.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	args := []string{"snapshot", "-f", "qcow2", "-l", img}
	o1, _, c1 := runQ(t, args...)
	o2, _, c2 := testkit.Run(t, "qemu-img", args...)
	if c1 != c2 || c1 != 1 || o1 != o2 {
		t.Errorf("snapshot -f: qimg exit %d %q, qemu-img exit %d %q", c1, o1, c2, o2)
	}
}
