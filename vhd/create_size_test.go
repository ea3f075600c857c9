package vhd_test

import (
	"errors"
	"testing"

	"github.com/qring/qring/block/memdev"
	"github.com/qring/qring/vhd"
	"github.com/qring/qring/vhd/format"
)

// TestCreateSizeRange: Create refuses a negative size and one past
// the format's limit however large. NewPlan rounded the size up to a
// sector before looking at it: -1 to -511 became a disk of 0 bytes, and
// a size within a sector of the int64 limit overflowed to a negative one
// that came out as a disk of 0 bytes too, with no error, where a size
// just past 2040 GiB is refused as too large (as QEMU refuses it).
func TestCreateSizeRange(t *testing.T) {
	for _, fixed := range []bool{false, true} {
		for _, size := range []int64{-1, -511, -512, 1<<63 - 1, 1<<63 - 511, format.MaxSectors*format.SectorSize + 1} {
			f := memdev.New(memdev.Options{})
			n, err := vhd.Create(f, vhd.CreateOptions{Size: size, Fixed: fixed})
			if !errors.Is(err, format.ErrTooLarge) {
				t.Errorf("Create(Size %d, fixed %v) = %d, %v; want ErrTooLarge", size, fixed, n, err)
			}
			if sz, _ := f.Size(); sz != 0 {
				t.Errorf("Create(Size %d, fixed %v) wrote %d bytes", size, fixed, sz)
			}
		}
		// The largest size still goes through, with the largest
		// geometry (dynamic only: a fixed one would be 2040 GiB of file).
		if !fixed {
			n, err := vhd.Create(memdev.New(memdev.Options{}), vhd.CreateOptions{Size: format.MaxSectors * format.SectorSize})
			if err != nil || n != format.MaxSectors*format.SectorSize {
				t.Errorf("Create(max) = %d, %v", n, err)
			}
		}
	}
}
