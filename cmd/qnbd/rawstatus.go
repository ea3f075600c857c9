package main

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/nbd"
)

// rawStatus reports a raw image's holes from the host file
// (block.DataMapper: SEEK_DATA and SEEK_HOLE, with QEMU's file driver's
// rules), as qimg map and qemu-nbd do. Every byte of a raw file belongs
// to its only layer: depth 1 ("qemu:allocation-depth").
type rawStatus struct{ dm block.DataMapper }

// Extent implements nbd.StatusSource.
func (r rawStatus) Extent(off, n int64) (nbd.Extent, error) {
	data, run, err := r.dm.DataRun(off, n)
	if err != nil {
		return nbd.Extent{}, err
	}
	return nbd.Extent{Len: run, Hole: !data, Zero: !data, Depth: 1}, nil
}
