package testkit

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
)

// DropBackingFormat ends the header extensions of the qcow2 image at
// path where its backing format extension is: the image then names its
// backing file without a format, as images older tools made do, and
// QEMU (and qring) probe the backing file's format.
func DropBackingFormat(t testing.TB, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b[:min(len(b), 4096)], binary.BigEndian.AppendUint32(nil, 0xe2792aca))
	if i < 0 {
		t.Fatalf("%s: no backing format extension", path)
	}
	binary.BigEndian.PutUint32(b[i:], 0)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
