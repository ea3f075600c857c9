package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestConvert_FailureRemovesCreatedDataFile: a convert that fails after
// creating its qcow2 output removes the output and also the external data
// file it created (-o data_file=; it was left behind, full size, with no
// image naming it); a data file that existed before stays.
func TestConvert_FailureRemovesCreatedDataFile(t *testing.T) {
	testkit.NeedQemu(t)
	d := testkit.Dir(t) // the source is damaged on purpose: not for checkAll
	p := filepath.Join(d, "p.raw")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "raw", p, "4M")
	testkit.MustRun(t, "qemu-io", "-f", "raw", "-c", "write -P 7 0 4M", p)
	src := filepath.Join(d, "c.qcow2")
	testkit.MustRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", p, src)
	f, err := os.OpenFile(src, os.O_RDWR, 0) // garbage over the compressed data
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, fi.Size()-0x50000), 0x50000)
	for i := range 64 {
		f.WriteAt([]byte{0xff, 0xff, 0xff, 0xff}, 0x50000+int64(i)*4096)
	}
	f.Close()
	out, data := filepath.Join(d, "o.qcow2"), filepath.Join(d, "o.data")
	if _, _, code := runQ(t, "convert", "-O", "qcow2", "-o", "data_file="+data, src, out); code == 0 {
		t.Fatal("convert of an unreadable source succeeded")
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("output %s kept", out)
	}
	if _, err := os.Stat(data); err == nil {
		t.Errorf("the data file convert created, %s, is left behind (its image was removed)", data)
	}
	if err := os.WriteFile(data, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	runQ(t, "convert", "-O", "qcow2", "-o", "data_file="+data, src, out)
	if _, err := os.Stat(data); err != nil {
		t.Errorf("a data file that existed before was removed: %v", err)
	}
}
