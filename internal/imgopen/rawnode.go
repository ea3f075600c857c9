package imgopen

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/block/filter"
	"github.com/qring/qring/qcow2"
)

// RawNode finds the qcow2 node under a stack of raw format nodes (zero or
// more filter.Raw windows, as a spec's driver=raw,file.driver=qcow2
// builds): it returns the node's image and where the outermost window
// starts on it (the windows' offsets added up), or nil when dev is
// anything else. QEMU's raw driver passes block status through to its
// child (BDRV_BLOCK_RAW), so qemu-nbd reports such a stack's holes and
// allocation depth from the qcow2 node; a plain device would report data
// everywhere.
func RawNode(dev block.Device) (im *qcow2.Image, off int64) {
	dev, off = RawStack(dev)
	if im = imageOf(dev); im == nil {
		return nil, 0
	}
	return im, off
}

// RawStack unwraps a stack of raw format nodes (zero or more filter.Raw
// windows): the device under them and where the outermost window starts
// on it (the windows' offsets added up); dev itself and 0 when it is
// not a raw node.
func RawStack(dev block.Device) (block.Device, int64) {
	var off int64
	for {
		r, ok := dev.(*filter.Raw)
		if !ok {
			return dev, off
		}
		off += r.Offset()
		dev = r.Unwrap()
	}
}
