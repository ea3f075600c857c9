package main

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/nbd"
	"github.com/qring/qring/qcow2"
)

// rawStatus reports a raw image's holes from the host file
// (block.DataMapper: SEEK_DATA and SEEK_HOLE, with QEMU's file driver's
// rules), and its zeros where the host can say (block.ZeroMapper: an NBD
// export's zero flag), as qimg map and qemu-nbd do. Every byte of a raw
// file belongs to its only layer: depth 1 ("qemu:allocation-depth").
type rawStatus struct{ dm block.DataMapper }

// Extent implements nbd.StatusSource.
func (r rawStatus) Extent(off, n int64) (nbd.Extent, error) {
	data, zero, run, err := block.ZeroRun(r.dm, off, n)
	if err != nil {
		return nbd.Extent{}, err
	}
	depth := 1
	if !data && !zero {
		depth = 0 // an export's hole not known zero: absent, as qemu-nbd
	}
	return nbd.Extent{Len: run, Hole: !data, Zero: zero, Depth: depth}, nil
}

// rawNodeStatus reports a raw node over a VMDK or VHD node as qemu-nbd
// does (over a qcow2 node: nbdqcow2.Node): QEMU's raw driver answers
// block status with BDRV_BLOCK_RAW and the block layer asks the child
// node for its own status, so each answer is one of the child's (an unallocated run is a
// hole at depth 0, zero only without a backing file or from past its
// end, decided at the answer's start), and "qemu:allocation-depth"
// counts the raw node's layer only (1 where the child allocates).
type rawNodeStatus struct{ l qcow2.Layer }

// Extent implements nbd.StatusSource.
func (r rawNodeStatus) Extent(off, n int64) (nbd.Extent, error) {
	s, err := r.l.LayerStatus(off, n)
	if err != nil {
		return nbd.Extent{}, err
	}
	e := nbd.Extent{Len: s.Len, Hole: !s.Data, Zero: s.Zero}
	if s.Allocated {
		e.Depth = 1
	}
	return e, nil
}
