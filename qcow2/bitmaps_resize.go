package qcow2

import (
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// A resize resizes the maintained bitmaps with the disk (Q22), as QEMU
// does since it allows resizing images with bitmaps: a growth's new
// range is clean, a shrink drops the bits past its end, and Close
// stores each table at the new size. QEMU refuses the resize while a
// bitmap is inconsistent (IN_USE when opened), whose bits it does not
// have to resize; so does the engine.

// bitmapsResizableLocked refuses resizing to size while a bitmap is
// inconsistent, with QEMU's message, or while one would grow past
// QEMU's bounds (mu held).
func (im *Image) bitmapsResizableLocked(size uint64) error {
	set := im.bitmaps.Load()
	if set == nil {
		return nil
	}
	cs := im.g.ClusterSize
	for _, b := range set.bms {
		if !b.consistent() {
			return &BitmapInconsistentError{Name: b.e.Name}
		}
		if size == 0 {
			// A table of no entries: QEMU refuses to open the image
			// ("doesn't satisfy the constraints", check_dir_entry).
			return fmt.Errorf("%w: bitmap '%s' cannot cover an empty disk", ErrUnsupported, b.e.Name)
		}
		if n := format.BitmapTableSize(size, b.e.GranularityBits, cs); n > maxBitmapTable || n*cs > maxBitmapPhys {
			return fmt.Errorf("%w: bitmap '%s' would be too large for a disk of %d bytes", ErrUnsupported, b.e.Name, size)
		}
	}
	return nil
}

// resizeBitmapsLocked resizes the maintained bitmaps to size, before
// guests see it (commitSizeLocked). Writes in flight keep marking: the
// new bits share the old ones' words (bitWords.resized). mu held.
func (im *Image) resizeBitmapsLocked(size uint64) {
	set := im.bitmaps.Load()
	if set == nil || set.size == size {
		return
	}
	for _, b := range set.bms {
		v := b.bits.Load()
		if v == nil {
			continue // none: bitmapsResizableLocked refused
		}
		gran := uint64(1) << b.e.GranularityBits
		b.bits.Store(v.resized((size + gran - 1) / gran))
		// b.e stays the table on the media (its size too: a directory
		// written before Close, writeNewDirLocked, names that table);
		// Close stores one of the new size (writeBitmapLocked).
		b.changed.Store(true) // its table's size changed
	}
	set.size = size
}

// BitmapInconsistentError refuses an operation that needs the bits of
// bitmap Name, which is inconsistent: IN_USE when the image was opened
// (its last writer did not close it), so its bits are not known. It is
// ErrUnsupported; RemoveBitmap deletes the bitmap.
type BitmapInconsistentError struct{ Name string }

func (e *BitmapInconsistentError) Error() string {
	return fmt.Sprintf("Bitmap '%s' is inconsistent and cannot be used", e.Name)
}

// Is makes it ErrUnsupported.
func (e *BitmapInconsistentError) Is(target error) bool { return target == ErrUnsupported }
