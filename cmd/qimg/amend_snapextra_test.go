package main

import (
	"bytes"
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
	// s1 with 8 bytes of extra data (the VM state size alone), s2 with
	// none: the table gets shorter, rewritten in place.
	b := editSnapshots(t, src, func(s []format.Snapshot) {
		if len(s) != 2 {
			t.Fatalf("%d snapshots", len(s))
		}
		s[0].ExtraData = s[0].ExtraData[:8]
		s[1].ExtraData = nil
	})
	ours, theirs := twoCopies(t, d, b)
	testkit.MustRun(t, "qemu-img", "check", theirs) // valid as version 2
	testkit.MustRun(t, "qemu-img", "amend", "-o", "compat=1.1", theirs)
	mustQ(t, "amend", "-o", "compat=1.1", ours)
	testkit.MustRun(t, "qemu-img", "check", ours)
	read := func(p string) []format.Snapshot {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return snapshotTable(t, b)
	}
	o, q := read(ours), read(theirs)
	if len(o) != len(q) {
		t.Fatalf("%d snapshots, qemu-img %d", len(o), len(q))
	}
	for i := range o {
		if !bytes.Equal(o[i].ExtraData, q[i].ExtraData) {
			t.Errorf("snapshot %d: extra data %x, qemu-img's %x", i, o[i].ExtraData, q[i].ExtraData)
		}
	}
}
