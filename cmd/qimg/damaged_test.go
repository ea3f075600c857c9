package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// An image whose L1 table points past the end of the file: check reports
// it and exits 2 as qemu-img does, info, map and reads work as QEMU's
// do, and a write is refused without changing the image.
func TestCheck_TablePastEOF(t *testing.T) {
	testkit.NeedQemu(t)
	p := filepath.Join(t.TempDir(), "d.qcow2") // damaged on purpose: no check at the end
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "64M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	f.ReadAt(b[:], 40)
	l1 := int64(binary.BigEndian.Uint64(b[:]))
	binary.BigEndian.PutUint64(b[:], 1<<63|100<<20) // L2 table at 100 MiB
	if _, err := f.WriteAt(b[:], l1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	before, _ := os.ReadFile(p)

	_, _, qcode := testkit.Run(t, "qemu-img", "check", p)
	_, e, code := runQ(t, "check", p)
	if code != 2 || qcode != 2 || !strings.Contains(e, "exceeding the end of the file") {
		t.Fatalf("check: exit %d (qemu-img %d), want 2\n%s", code, qcode, e)
	}
	if out := mustQ(t, "info", p); !strings.Contains(out, "virtual size: 64 MiB") {
		t.Fatalf("info:\n%s", out)
	}
	mustQ(t, "map", p)
	mustQ(t, "io", "-r", "-c", "read -P 0 0 64k", p)
	if _, e, code = runQ(t, "io", "-c", "write 0 4k", p); code == 0 || !strings.Contains(e, "past the end of the file") {
		t.Fatalf("write into the damaged image: exit %d\n%s", code, e)
	}
	if after, _ := os.ReadFile(p); string(after) != string(before) {
		t.Fatal("the damaged image changed")
	}
}
