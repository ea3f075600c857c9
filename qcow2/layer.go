package qcow2

import "github.com/qring/qring/block"

// Layer is a backing device of a format the engine does not read itself
// (a VMDK or VHD image that Options.OpenBacking opened), read-only, that
// tells its own layer's block status as QEMU's driver for it does, so
// that map, block status and the NBD server's allocation walk the chain
// through it (Q23).
type Layer interface {
	block.Device
	// LayerStatus is the layer's own status for a prefix of
	// [off, off+n), off below its size.
	LayerStatus(off, n int64) (LayerStatus, error)
	// LayerBacking is the device under the layer (a VMDK image's
	// parent), nil at the bottom.
	LayerBacking() block.Device
}

// LayerStatus is one run of a Layer's own block status.
type LayerStatus struct {
	Len int64
	// Allocated: the layer decides the run's contents
	// (BDRV_BLOCK_ALLOCATED); else the layer below does.
	Allocated bool
	Data      bool
	// Zero: reads as zeros; for a run not Allocated, only where there
	// is no layer below or the run lies past its end, as QEMU's
	// bdrv_co_block_status says.
	Zero bool
	// Offset is the run's host offset in File, -1 when there is none.
	Offset int64
	// File names the file Offset lies in (qemu-img map's File column).
	File string
}

// BackingOpener opens a backing file of a format the engine does not
// read ("vmdk", "vpc"), read-only, with the chain's options (o.ReadOnly
// is set; NoLock, ForceShare and Opener are the top image's). It
// returns a *FormatError for a format it does not read either. A path
// that starts with "json:" is a driver tree spec (QEMU's pseudo-protocol)
// and format the header's backing format, for a spec that names no
// driver; o then carries the chain above for the loop check (Q23).
type BackingOpener func(path, format string, o Options) (block.Device, error)
