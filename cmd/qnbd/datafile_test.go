package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestDataFile_ReadOnlyExport: an image with an external data file
// (qemu-img create -o data_file=...) served read-only: a client reads
// qemu-img's bytes and block status through NBD (data from the data
// file); a writable export takes a client's writes into the data file
// (qcow2 DF4), which QEMU then reads.
func TestDataFile_ReadOnlyExport(t *testing.T) {
	need(t, "qemu-img", "qemu-io")
	dir := shortDir(t)
	img, data := filepath.Join(dir, "m.qcow2"), filepath.Join(dir, "d.raw")
	sh(t, "qemu-img", "create", "-f", "qcow2", "-o", "data_file="+data, img, "4M")
	sh(t, "qemu-io", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x12 1M 1M", "-c", "discard 1536k 64k",
		"-c", "write -z 2M 128k", img)
	want := filepath.Join(dir, "want.raw")
	sh(t, "qemu-img", "convert", "-O", "raw", img, want)

	s := startUnix(t, dir, "d", "-r", "-f", "qcow2", img)
	got := filepath.Join(dir, "got.raw")
	sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.uri, got)
	a, _ := os.ReadFile(want)
	b, _ := os.ReadFile(got)
	if !bytes.Equal(a, b) {
		t.Fatal("the export's bytes differ from qemu-img convert's")
	}
	if ours, theirs := qemuMap(t, "-f", "raw", s.uri), qemuMap(t, img); !reflect.DeepEqual(ours, theirs) {
		t.Fatalf("block status through NBD %v, qemu-img map of the image %v", ours, theirs)
	}
	s.stop()
	check(t, img)

	w := startUnix(t, dir, "w", "-f", "qcow2", img)
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x33 100k 200k", "-c", "write -z 1M 64k", w.uri)
	w.stop()
	check(t, img)
	sh(t, "qemu-io", "-c", "read -P 0x33 100k 200k", "-c", "read -P 0 1M 64k", "-c", "read -P 0x12 1088k 64k", img)
}
