package qcow2

import (
	"testing"
)

// TestDiscardDocV3NoBacking pins what Discard's comment now says
// (it said a v3 image without a backing file gets unallocated clusters):
// as QEMU 7.2's discard_in_l2_slice, an allocated cluster of a v3 image
// becomes a zero cluster, backing file or not (qemu-img map shows it
// present and zero), and an unallocated one stays unallocated; on v2 it
// becomes unallocated.
func TestDiscardDocV3NoBacking(t *testing.T) {
	for _, c := range []struct {
		compat    string
		allocated bool // Status.Allocated of the discarded cluster
	}{{"1.1", true}, {"0.10", false}} {
		im, _ := testImage(t, CreateOptions{Size: 1 << 20, Compat: c.compat}, Options{})
		if _, err := im.WriteAt(pattern(64<<10, 1), 0); err != nil {
			t.Fatal(err)
		}
		if err := im.Discard(0, 128<<10); err != nil {
			t.Fatal(err)
		}
		s, err := im.BlockStatus(0, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Zero || s.Data || s.Allocated != c.allocated {
			t.Errorf("compat %s: discarded allocated cluster: %+v, want zero, allocated %v", c.compat, s, c.allocated)
		}
		s, err = im.BlockStatus(64<<10, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		if s.Allocated || !s.Zero {
			t.Errorf("compat %s: discarded unallocated cluster: %+v, want unallocated", c.compat, s)
		}
	}
}
