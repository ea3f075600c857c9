package main

import (
	"fmt"
	"slices"

	"github.com/qring/qring/internal/imgopen"
	"github.com/qring/qring/qcow2"
)

// convertBitmapsCheck lists the source's persistent dirty bitmaps for
// convert --bitmaps (its top layer's, as qemu-img), refusing a source
// that cannot have any (not qcow2 version 3) and an inconsistent bitmap
// unless skip, with qemu-img's messages, before the output is created.
func convertBitmapsCheck(src *imgopen.Opened, skip bool) ([]qcow2.BitmapInfo, error) {
	if src.Image == nil || src.Image.Header().Version < 3 {
		return nil, fmt.Errorf("Source lacks bitmap support")
	}
	bms := src.Image.Bitmaps()
	for _, b := range slices.Backward(bms) { // QEMU's order: newest first
		if b.InUse && !skip {
			return nil, fmt.Errorf("Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it", b.Name)
		}
	}
	return bms, nil
}

// convertBitmaps copies bms from src to dst: each a new bitmap of the
// same granularity and state, merged from the source's. Names the
// output has already are refused first, in QEMU's order (it walks its
// bitmaps newest first), and nothing is added then.
func convertBitmaps(src, dst *qcow2.Image, bms []qcow2.BitmapInfo, warn func(string, ...any)) error {
	have := dst.Bitmaps()
	for _, b := range slices.Backward(bms) {
		if !b.InUse && slices.ContainsFunc(have, func(h qcow2.BitmapInfo) bool { return h.Name == b.Name }) {
			return fmt.Errorf("Failed to create bitmap %s: Bitmap already exists: %s", b.Name, b.Name)
		}
	}
	for _, b := range slices.Backward(bms) { // QEMU warns newest first
		if b.InUse && warn != nil {
			warn("Skipping inconsistent bitmap '%s'", b.Name)
		}
	}
	for _, b := range bms {
		if b.InUse {
			continue
		}
		if err := dst.AddBitmap(b.Name, b.Granularity, b.Enabled); err != nil {
			return fmt.Errorf("Failed to create bitmap %s: %s", b.Name, bitmapErrText(err))
		}
		if err := dst.MergeBitmap(b.Name, src, b.Name); err != nil {
			return fmt.Errorf("Failed to populate bitmap %s: %s", b.Name, bitmapErrText(err))
		}
	}
	return nil
}
