package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestResize_RawEmptyFirstBlockLikeQemu: growing an empty raw file
// leaves the file qemu-img leaves, every preallocation mode: after a
// falloc QEMU writes its first block as after a plain grow
// (allocate_first_block), so that 100 bytes make a 512-byte file (qimg
// left 100 bytes).
func TestResize_RawEmptyFirstBlockLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	for _, size := range []string{"100", "600", "5000", "1M"} {
		for _, mode := range []string{"off", "falloc", "full"} {
			theirs, ours := filepath.Join(d, "theirs.raw"), filepath.Join(d, "ours.raw")
			for _, p := range []string{theirs, ours} {
				if err := os.WriteFile(p, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			testkit.MustRun(t, "qemu-img", "resize", "-q", "-f", "raw", "--preallocation="+mode, theirs, size)
			if _, e, code := runQ(t, "resize", "-q", "-f", "raw", "--preallocation="+mode, ours, size); code != 0 {
				t.Fatalf("%s %s: exit %d: %s", size, mode, code, e)
			}
			if q, o := fileSize(t, theirs), fileSize(t, ours); q != o {
				t.Errorf("%s, --preallocation=%s: qimg's file %d bytes, qemu-img's %d", size, mode, o, q)
			}
		}
	}
}
