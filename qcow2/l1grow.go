package qcow2

import (
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// growL1 replaces the active L1 table with one of n entries (QEMU's
// qcow2_grow_l1_table with an exact size): new clusters taken like any
// other (S1), their refcounts durable (Q1), the new table written and
// flushed, then the header pointed at it and flushed (Q4), and only then
// the old table freed. Lock-free readers switch to the new table
// atomically; entries change only under mu, which the caller holds.
func (im *Image) growL1(n uint64) error {
	g := &im.g
	cs := g.ClusterSize
	if n*8 > format.MaxL1Bytes {
		return fmt.Errorf("%w: L1 table would exceed %d bytes", ErrUnsupported, format.MaxL1Bytes)
	}
	old := im.l1
	if n <= uint64(len(old)) {
		return nil
	}
	nclusters := (n*8 + cs - 1) / cs
	off, _, err := im.allocClustersLocked(nclusters)
	if err != nil {
		return err
	}
	abort := func(err error) error {
		im.freeClustersLocked(off, nclusters)
		return err
	}
	if err := im.rbc.Flush(); err != nil { // Q1: counted before referenced
		return abort(err)
	}
	table := make([]uint64, n)
	copy(table, old)
	buf := alignedCopy(make([]byte, nclusters*cs), im.memAlign)
	for i, e := range table {
		be.PutUint64(buf[i*8:], e)
	}
	im.c.metaWrites.Add(1)
	if err := writeAt(im.dev, buf, int64(off)); err != nil {
		return abort(err)
	}
	if err := im.dev.Flush(); err != nil {
		return abort(err)
	}
	im.event(EvL1Grow)
	oldOff, oldSize := im.hdr.L1TableOffset, im.hdr.L1Size
	im.hdr.L1TableOffset, im.hdr.L1Size = format.HostOff(off), uint32(n)
	if err := im.writeHeader(); err != nil {
		im.hdr.L1TableOffset, im.hdr.L1Size = oldOff, oldSize
		return abort(err)
	}
	if err := im.dev.Flush(); err != nil {
		// The header may or may not point at the new table: keep both.
		im.hdr.L1TableOffset, im.hdr.L1Size = oldOff, oldSize
		return err
	}
	im.setL1(table, off)
	// Q3: the header no longer points at the old table (durably).
	oldBytes := uint64(oldSize) * 8
	return im.freeClustersLocked(uint64(oldOff), (oldBytes+cs-1)/cs)
}

// setL1 installs the active L1 table (under mu, or before the image is
// shared) for the owner and for lock-free readers.
func (im *Image) setL1(table []uint64, off uint64) {
	im.l1 = table
	im.l1p.Store(&table)
	im.l1Off.Store(off)
	im.l1Len.Store(uint64(len(table)) * 8)
}
