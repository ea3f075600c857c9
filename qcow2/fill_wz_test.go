package qcow2

import (
	"testing"

	"github.com/qring/qring/block"
)

// TestFill_ResolveAllocWritten: with prealloc-fill=auto, a device whose
// Allocate zeroing leaves written extents (block B9) gets no zero fill,
// whatever its medium or meter; the explicit modes stay as asked.
func TestFill_ResolveAllocWritten(t *testing.T) {
	for _, tc := range []struct {
		opt  string
		caps block.Caps
		mode string
		why  string
	}{
		{FillAuto, block.Caps{Media: block.MediaSSD, AllocWritten: true}, FillUnwritten, "auto: write-zeroes"},
		{"", block.Caps{Media: block.MediaRAM, AllocWritten: true}, FillUnwritten, "auto: write-zeroes"},
		{"", block.Caps{Media: block.MediaHDD, Metered: true, AllocWritten: true}, FillUnwritten, "auto: write-zeroes"},
		{"", block.Caps{Media: block.MediaSSD}, FillUnwritten, "auto: ssd"},
		{"", block.Caps{Media: block.MediaRAM}, FillZeroes, "auto: ram"},
		{FillZeroes, block.Caps{Media: block.MediaSSD, AllocWritten: true}, FillZeroes, "prealloc-fill=zeroes"},
		{FillUnwritten, block.Caps{Media: block.MediaSSD, AllocWritten: true}, FillUnwritten, "prealloc-fill=unwritten"},
	} {
		mode, why, err := resolveFill(tc.opt, tc.caps)
		if err != nil || mode != tc.mode || why != tc.why {
			t.Errorf("resolveFill(%q, %+v) = %q, %q, %v; want %q, %q", tc.opt, tc.caps, mode, why, err, tc.mode, tc.why)
		}
	}
}
