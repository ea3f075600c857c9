package main

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/qcow2"
)

// underRaw is the qcow2 image under one or more raw nodes (windows of it
// too) and where the outermost node's byte 0 lies on it; nil when dev is
// no raw node over one. QEMU's raw driver passes a resize to its child
// at its offset, and its snapshot operations fall back to the child
// (bdrv_snapshot_fallback).
func underRaw(dev block.Device) (*qcow2.Image, int64) {
	var off int64
	for {
		r, ok := dev.(*filter.Raw)
		if !ok {
			return nil, 0
		}
		off += r.Offset()
		dev = r.Unwrap()
		if im, ok := dev.(*qcow2.Image); ok {
			return im, off
		}
	}
}
