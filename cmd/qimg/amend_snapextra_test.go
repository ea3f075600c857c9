package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestAmend_UpgradeShortSnapshotExtraLikeQemu: a version 2 image whose
// snapshot entries carry less than 16 bytes of extra data (version 2
// allows it; QEMU before 1.1 wrote them so) upgraded to compat=1.1 gets
// QEMU's 24 bytes per entry (VM state size, the disk size, icount -1),
// as qemu-img amend writes them. qimg rewrote only the header, and
// qemu-img check found every such entry incomplete.
func TestAmend_UpgradeShortSnapshotExtraLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", src, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", src)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s1", src)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "s2", src)
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	// Rewrite the table in place, shorter: s1 with 8 bytes of extra
	// data (the VM state size alone), s2 with none.
	off := be.Uint64(b[64:])
	snaps, _, err := format.ParseSnapshots(b[off:], be.Uint32(b[60:]))
	if err != nil || len(snaps) != 2 {
		t.Fatalf("snapshots %v, %v", snaps, err)
	}
	snaps[0].ExtraData = snaps[0].ExtraData[:8]
	snaps[1].ExtraData = nil
	tbl, err := format.EncodeSnapshots(snaps)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[off:], tbl)
	ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
	for _, p := range []string{ours, theirs} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testkit.MustRun(t, "qemu-img", "check", theirs) // valid as version 2
	testkit.MustRun(t, "qemu-img", "amend", "-o", "compat=1.1", theirs)
	mustQ(t, "amend", "-o", "compat=1.1", ours)
	testkit.MustRun(t, "qemu-img", "check", ours)
	extra := func(p string) [][]byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s, _, err := format.ParseSnapshots(b[be.Uint64(b[64:]):], be.Uint32(b[60:]))
		if err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for _, sn := range s {
			out = append(out, sn.ExtraData)
		}
		return out
	}
	o, q := extra(ours), extra(theirs)
	if len(o) != len(q) {
		t.Fatalf("%d snapshots, qemu-img %d", len(o), len(q))
	}
	for i := range o {
		if !bytes.Equal(o[i], q[i]) {
			t.Errorf("snapshot %d: extra data %x, qemu-img's %x", i, o[i], q[i])
		}
	}
}
