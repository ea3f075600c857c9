package testkit

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestQemuImgCheck_Verdicts: a fresh image is Clean; one with a leaked
// cluster is not Clean but has NoCorruption, and QemuCheck's report
// quotes qemu-img.
func TestQemuImgCheck_Verdicts(t *testing.T) {
	NeedQemu(t)
	p := filepath.Join(t.TempDir(), "t.qcow2")
	MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "4M")
	MustRun(t, "qemu-io", "-c", "write -P 3 0 64k", p)
	r, err := QemuImgCheck(p)
	if err != nil || !r.Clean() || !r.NoCorruption() {
		t.Fatalf("fresh image: %v %+v", err, r)
	}
	QemuCheck(t, p)

	leakCluster0(t, p)
	r, err = QemuImgCheck(p)
	if err != nil || r.Clean() || !r.NoCorruption() || r.Leaks != 1 || r.Exit != 3 {
		t.Fatalf("leaked cluster: %v %+v", err, r)
	}
	f := newFakeT(t, "TestX")
	f.run(func(f *fakeT) { QemuCheck(f, p) })
	if len(f.errs) != 1 || !strings.Contains(f.errs[0], "exit 3, 0 corruptions, 1 leaks") || !strings.Contains(f.errs[0], "1 leaked clusters were found") {
		t.Errorf("QemuCheck of a leak: %q", f.errs)
	}
	if !QemuCheckNoCorruption(t, p) {
		t.Error("QemuCheckNoCorruption refused a leak")
	}
}

// TestMustRun_PatternMismatch: qemu-io exits 0 when read -P finds other
// data; MustRun fails anyway.
func TestMustRun_PatternMismatch(t *testing.T) {
	NeedQemu(t)
	p := filepath.Join(t.TempDir(), "t.qcow2")
	MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	f := newFakeT(t, "TestX")
	f.run(func(f *fakeT) { MustRun(f, "qemu-io", "-c", "read -P 7 0 4k", p) })
	if len(f.errs) != 1 || !strings.Contains(f.errs[0], "Pattern verification failed") {
		t.Errorf("errors %q", f.errs)
	}
}

// leakCluster0 drops the L2 entry of guest cluster 0 of a v3 image with
// 64 KiB clusters, leaking its data cluster.
func leakCluster0(t *testing.T, path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := f.ReadAt(b, 40); err != nil { // l1_table_offset
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b, int64(binary.BigEndian.Uint64(b))); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 8), int64(binary.BigEndian.Uint64(b)&0x00fffffffffffe00)); err != nil {
		t.Fatal(err)
	}
}
