package testkit

import (
	"encoding/binary"
	"os"
	"testing"
)

// OverlappingVMDK makes p a 1 MiB monolithicSparse VMDK image (qemu-img
// create) whose first two grains are written (qemu-io) and then whose
// grain 1 points at grain 0's sector: QEMU reads and writes it, qring
// opens it read-only only (vmdk's KD8: grains that overlap).
func OverlappingVMDK(t testing.TB, p string) {
	t.Helper()
	MustRun(t, "qemu-img", "create", "-q", "-f", "vmdk", p, "1M")
	MustRun(t, "qemu-io", "-f", "vmdk", "-c", "write 0 128k", p)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	gd := int64(le.Uint64(b[56:])) * 512 // the header's gdOffset, in sectors
	gt := int64(le.Uint32(b[gd:])) * 512
	copy(b[gt+4:gt+8], b[gt:gt+4])
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
