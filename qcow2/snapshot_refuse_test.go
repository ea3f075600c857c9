package qcow2

import (
	"strings"
	"testing"

	"github.com/qring/qring/block/memdev"
)

// TestCreateSnapshotLongNameRefusedUnchanged: a name the snapshot table
// cannot hold (over 65535 bytes) is refused before anything changes; it
// was found only once the snapshot L1 was allocated, every cluster
// counted once more and COPIED cleared on the media (found by review).
func TestCreateSnapshotLongNameRefusedUnchanged(t *testing.T) {
	mem := memdev.New(memdev.Options{})
	if err := CreateDevice(mem, CreateOptions{Size: 1 << 20, ClusterSize: 4096}); err != nil {
		t.Fatal(err)
	}
	im, err := OpenDevice(mem, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	writeAt(t, im, 0, pattern(64<<10, 1))
	if err := im.Flush(); err != nil {
		t.Fatal(err)
	}
	_, cerr := im.CreateSnapshot(strings.Repeat("n", 70000))
	if cerr == nil {
		t.Fatal("a 70000-byte name was accepted")
	}
	t.Logf("CreateSnapshot: %v", cerr)
	r, err := im.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Leaks != 0 || r.Corruptions != 0 {
		t.Errorf("refused CreateSnapshot left leaks=%d corruptions=%d: %v", r.Leaks, r.Corruptions, head(r.Messages, 4))
	}
	if m := im.Metrics(); true {
		_ = m
	}
}
