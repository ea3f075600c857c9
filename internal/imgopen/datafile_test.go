package imgopen

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2"
)

// TestDataFile_GivenInSpec: the data file of an image with an external
// data file given in the spec (QEMU's data-file.filename) instead of the
// header's, through ImageOpts + Open and through OpenSpec: the image
// reads the given file, which is closed with it.
func TestDataFile_GivenInSpec(t *testing.T) {
	testkit.NeedQemu(t)
	dir := testkit.Dir(t)
	img, data := filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "d.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+data, img, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 0x11 0 64k", img)
	moved := filepath.Join(dir, "moved.raw")
	if err := os.Rename(data, moved); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0x11}, 64<<10)
	read := func(o *Opened) {
		t.Helper()
		got := make([]byte, len(want))
		if err := o.Dev.Readv(0, [][]byte{got}); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read: %v", err)
		}
		if !testkit.HoldsLockByte(moved, 100) {
			t.Fatal("the data file is not locked while the image is open")
		}
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Open(Spec{Path: img, ReadOnly: true}); !errors.Is(err, qcow2.ErrDataFile) {
		t.Fatalf("open without the moved data file: %v", err)
	}
	spec := "driver=qcow2,file.filename=" + img + ",data-file.filename=" + moved
	s, err := ImageOpts(spec, Spec{ReadOnly: true})
	if err != nil || s.DataFile != moved {
		t.Fatalf("ImageOpts: %v, DataFile %q", err, s.DataFile)
	}
	o, err := Open(s)
	if err != nil {
		t.Fatal(err)
	}
	read(o)
	if o, err = OpenSpec(spec, Spec{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	read(o)
	if _, err := ImageOpts("driver=qcow2,file.filename="+img+",data-file=x", Spec{}); err == nil {
		t.Fatal("data-file=NAME (a node's name for QEMU) accepted")
	}
	// Closed with the image: nothing holds it open or locked.
	if testkit.HoldsLockByte(moved, 100) {
		t.Fatal("the data file is still locked")
	}
}
