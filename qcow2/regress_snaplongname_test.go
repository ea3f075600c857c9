package qcow2

import (
	"strings"
	"testing"
)

// TestRegress_SnapshotLongNameReopens: a snapshot name of 2000 bytes
// (the table holds up to 65535, as QEMU reads them) made an image that
// no longer opened: the open read 1200 bytes a snapshot and found the
// entry running past them (review 53).
func TestRegress_SnapshotLongNameReopens(t *testing.T) {
	s := newSnapImage(t, CreateOptions{Size: 8 << 20})
	s.write(pattern(65536, 7), 0)
	names := []string{strings.Repeat("n", 2000), "short", strings.Repeat("m", 65000)}
	for _, name := range names {
		if _, err := s.im.CreateSnapshot(name); err != nil {
			t.Fatalf("CreateSnapshot: %v", err)
		}
	}
	s.step() // close, our check, qemu-img check, reopen
	got := s.im.Snapshots()
	if len(got) != len(names) {
		t.Fatalf("%d snapshots after reopen, want %d", len(got), len(names))
	}
	for i, sn := range got {
		if sn.Name != names[i] {
			t.Errorf("snapshot %d: name of %d bytes, want %d", i, len(sn.Name), len(names[i]))
		}
	}
}
