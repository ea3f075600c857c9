package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
)

// TestSnapshot_LongNameLikeQemu: snapshot -c stores the first 255 bytes
// of a longer name, as qemu-img does (its 256-byte buffer): -l lists the
// same table, and -a by the whole name fails on both images alike. qimg
// stored the whole name, and refused one past 65535 bytes.
func TestSnapshot_LongNameLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	ours, theirs := filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
	for _, p := range []string{ours, theirs} {
		testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "1M")
	}
	for _, name := range []string{strings.Repeat("x", 300), strings.Repeat("y", 70000)} {
		testkit.MustRun(t, "qemu-img", "snapshot", "-c", name, theirs)
		mustQ(t, "snapshot", "-c", name, ours)
	}
	o, _ := snapshotTags(t, ours)
	q, _ := snapshotTags(t, theirs)
	if len(o) != 2 || len(q) != 2 || o[0] != q[0] || o[1] != q[1] || len(o[0]) != 255 {
		t.Errorf("tags %.20q (%d bytes), qemu-img's %.20q", o, len(o[0]), q)
	}
	_, _, code := runQ(t, "snapshot", "-a", strings.Repeat("x", 300), ours)
	_, _, qcode := testkit.Run(t, "qemu-img", "snapshot", "-a", strings.Repeat("x", 300), theirs)
	if code != qcode || code == 0 {
		t.Errorf("-a by the whole name: exit %d, qemu-img %d", code, qcode)
	}
	mustQ(t, "snapshot", "-a", strings.Repeat("x", 255), ours)
	testkit.MustRun(t, "qemu-img", "check", ours)
}
