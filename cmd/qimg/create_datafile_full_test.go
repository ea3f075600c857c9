package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestCreate_DataFileFullWritesZeros: -o preallocation=full writes the
// data file's zeros out, as qemu-img does: no hole and no unwritten
// extent (which SEEK_DATA takes for a hole on ext4 and XFS). A zeroing
// request (ZERO_RANGE) left it as falloc leaves it.
func TestCreate_DataFileFullWritesZeros(t *testing.T) {
	dir := t.TempDir()
	df := filepath.Join(dir, "d.raw")
	const size = 4 << 20
	if _, e, code := runQ(t, "create", "-q", "-f", "qcow2", "-o", "preallocation=full,data_file="+df, filepath.Join(dir, "a.qcow2"), "4M"); code != 0 {
		t.Fatalf("create: exit %d: %s", code, e)
	}
	f, err := os.Open(df)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const seekData, seekHole = 3, 4 // Linux's SEEK_DATA, SEEK_HOLE
	if d, err := f.Seek(0, seekData); err != nil || d != 0 {
		t.Fatalf("SEEK_DATA: %d, %v: the zeros were not written", d, err)
	}
	if h, err := f.Seek(0, seekHole); err != nil || h != size {
		t.Fatalf("SEEK_HOLE: %d, %v, want %d", h, err, size)
	}
}
