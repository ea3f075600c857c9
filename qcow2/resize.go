package qcow2

import (
	"fmt"
)

// Shrink reduces the virtual size to size (qemu-img resize --shrink); a
// size at or above the current one is Truncate. The clusters wholly past
// the new end are discarded first (they read as zeros should the image
// grow again), the allocated tail of the last cluster is zeroed, and
// only then, after a flush, does the header get the new size: a crash in
// between leaves the old size with some data gone, never a table
// pointing at freed clusters. The L1 table keeps its length.
func (im *Image) Shrink(size int64) error {
	cur, err := im.Size()
	if err != nil {
		return err
	}
	if size >= cur {
		return im.Truncate(size)
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrUnsupported, size)
	}
	cs := int64(im.g.ClusterSize)
	end := min((size+cs-1)/cs*cs, cur)
	if end > size {
		st, err := im.BlockStatus(size-size%cs, cs)
		if err != nil {
			return err
		}
		if st.Allocated && !st.Zero {
			if err := im.WriteZeroes(size, end-size, 0); err != nil {
				return err
			}
		}
	}
	if end < cur {
		if err := im.Discard(end, cur-end); err != nil {
			return err
		}
	}
	return im.flushedWritable(func() error { return im.setSizeLocked(uint64(size)) })
}
