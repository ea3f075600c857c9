package qcow2

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An encrypted image with an external (not raw) data file, shrunk into
// a cluster that holds data and grown again, must read zeros past the
// old end: Truncate wrote encrypted zeros there, and dfResize's cut of
// the data file to the old size then dropped them, so the range read
// plaintext zeros through the cipher (garbage).
func TestCrypt_DataFileShrinkGrowZeros(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	p, df := filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "q.data")
	testkit.MustRun(t, "qemu-img", "create", "-f", "qcow2", "--object", "secret,id=sec0,data="+cryptPass,
		"-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10,cluster_size=4096,data_file="+df, p, "16384")
	im := cryptOpen(t, p, Options{})
	if _, err := im.WriteAt(bytes.Repeat([]byte{3}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	if err := im.Shrink(9728); err != nil {
		t.Fatal(err)
	}
	if err := im.Truncate(16384); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16384-9728)
	if _, err := im.ReadAt(got, 9728); err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		if b != 0 {
			t.Fatalf("byte %d reads %#x after shrink and grow, want 0", 9728+i, b)
		}
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
}
