package qcow2

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMapOddRawBacking: a raw backing file of 1000 bytes is 1024
// bytes long for QEMU (DIV_ROUND_UP to sectors), so qemu-img map of a
// 1024-byte overlay reports [1000,1024) at depth 1, present, zero; the
// engine took the backing file's length as it is and showed the tail at
// depth 0, not present (found by review).
func TestMapOddRawBacking(t *testing.T) {
	dir := t.TempDir()
	b := filepath.Join(dir, "odd.raw")
	if err := os.WriteFile(b, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ov.qcow2")
	if err := Create(p, CreateOptions{Size: 1024, BackingFile: b, BackingFormat: "raw"}); err != nil {
		t.Fatal(err)
	}
	im, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	m, err := im.Map()
	if err != nil {
		t.Fatal(err)
	}
	last := m[len(m)-1]
	t.Logf("%+v", m)
	if last.Start+last.Length != 1024 || last.Depth != 1 || !last.Present || !last.Zero {
		t.Fatalf("tail extent %+v; qemu-img 7.2: start 1000 length 24 depth 1 present zero", last)
	}
}
