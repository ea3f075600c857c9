package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qring/qring/internal/testkit"
	"github.com/qring/qring/qcow2/format"
)

// twoCopies writes the image bytes b to ours.qcow2 and theirs.qcow2 in
// d: one for qimg, one for QEMU's tools, compared after.
func twoCopies(t *testing.T, d string, b []byte) (ours, theirs string) {
	t.Helper()
	ours, theirs = filepath.Join(d, "ours.qcow2"), filepath.Join(d, "theirs.qcow2")
	for _, p := range []string{ours, theirs} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return ours, theirs
}

// snapshotTable reads the snapshot table of the image bytes b.
func snapshotTable(t *testing.T, b []byte) []format.Snapshot {
	t.Helper()
	be := binary.BigEndian
	s, _, err := format.ParseSnapshots(b[be.Uint64(b[64:]):], be.Uint32(b[60:]))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// editSnapshots returns the bytes of the image at p with its snapshot
// table changed by edit and written back in place (edit must not make it
// longer).
func editSnapshots(t *testing.T, p string, edit func([]format.Snapshot)) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	snaps := snapshotTable(t, b)
	edit(snaps)
	tbl, err := format.EncodeSnapshots(snaps)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[binary.BigEndian.Uint64(b[64:]):], tbl)
	return b
}

// snapshotTags lists the TAG column of qemu-img snapshot -l of p.
func snapshotTags(t *testing.T, p string) (tags []string, out string) {
	t.Helper()
	out, _, _ = testkit.Run(t, "qemu-img", "snapshot", "-l", p)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) > 2 {
		for _, l := range lines[2:] {
			tags = append(tags, strings.Fields(l)[1])
		}
	}
	return tags, out
}
