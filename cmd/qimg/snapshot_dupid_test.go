package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// TestSnapshot_DeleteNameAmongDuplicateIDsLikeQemu: in a table where two
// snapshots share an ID (another tool's, or a crafted one), snapshot -d
// NAME deletes the snapshot of that name, as qemu-img does; qimg looked
// the name's ID up and deleted the first snapshot with that ID, another
// snapshot, and kept the one asked for.
func TestSnapshot_DeleteNameAmongDuplicateIDsLikeQemu(t *testing.T) {
	testkit.NeedQemu(t)
	d := t.TempDir()
	src := filepath.Join(d, "src.qcow2")
	testkit.MustRun(t, "qemu-img", "create", "-q", "-f", "qcow2", src, "1M")
	testkit.MustRun(t, "qemu-io", "-c", "write -P 1 0 64k", src)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "A", src)
	testkit.MustRun(t, "qemu-io", "-c", "write -P 2 0 64k", src)
	testkit.MustRun(t, "qemu-img", "snapshot", "-c", "B", src)
	b := editSnapshots(t, src, func(s []format.Snapshot) {
		if len(s) != 2 || s[0].ID != "1" || s[1].ID != "2" {
			t.Fatalf("snapshots %+v", s)
		}
		s[1].ID = "1"
	})
	ours, theirs := twoCopies(t, d, b)
	testkit.MustRun(t, "qemu-img", "snapshot", "-d", "B", theirs)
	mustQ(t, "snapshot", "-d", "B", ours)
	tags, o := snapshotTags(t, ours)
	_, q := snapshotTags(t, theirs)
	if o != q || len(tags) != 1 || tags[0] != "A" {
		t.Errorf("after -d B:\n%s\nqemu-img's:\n%s", o, q)
	}
	testkit.MustRun(t, "qemu-img", "check", ours)
	// A's data is A's: the snapshot kept is the one of that name.
	testkit.MustRun(t, "qemu-img", "convert", "-O", "raw", "-l", "snapshot.name=A", ours, filepath.Join(d, "a.raw"))
	if r, _ := os.ReadFile(filepath.Join(d, "a.raw")); len(r) < 1 || r[0] != 1 {
		t.Errorf("snapshot A does not read back as A's data")
	}
}
