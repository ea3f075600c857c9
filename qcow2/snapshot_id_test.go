package qcow2

import (
	"math"
	"testing"
)

// TestStrtoul: snapshot IDs read as QEMU's find_new_snapshot_id reads
// them (C's strtoul), so the next ID after a table of foreign IDs is
// QEMU's: after "5x" 6, after "+3" 4, after " 4" 5, after "-1" 0 (qimg
// took any of them for 0 and chose 1).
func TestStrtoul(t *testing.T) {
	for s, want := range map[string]uint64{
		"": 0, "abc": 0, "7": 7, "5x": 5, "+3": 3, " 4": 4, "\t\n12": 12, "-1": math.MaxUint64,
		"-0": 0, "- 1": 0, "18446744073709551615": math.MaxUint64, "18446744073709551616": math.MaxUint64,
		"99999999999999999999999": math.MaxUint64, "007": 7,
	} {
		if got := strtoul(s); got != want {
			t.Errorf("strtoul(%q) = %d, want %d", s, got, want)
		}
	}
}
