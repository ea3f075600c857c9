package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// ErrL1TooLarge: a growth whose L1 table would pass QEMU's 32 MiB
// (QCOW_MAX_L1_SIZE; its qcow2_grow_l1_table's EFBIG). It wraps
// ErrUnsupported too.
var ErrL1TooLarge = errors.New("L1 table too large")

// growL1 replaces the active L1 table with one of n entries (QEMU's
// qcow2_grow_l1_table with an exact size): new clusters taken like any
// other (SP1), their refcounts durable (Q1), the new table written and
// flushed, then the header pointed at it and flushed (Q4), and only then
// the old table freed. Lock-free readers switch to the new table
// atomically; entries change only under mu, which the caller holds. A
// failure on the way is a StepError in QEMU's words ("Failed to grow
// the L1 table").
func (im *Image) growL1(n uint64) error {
	err := im.growL1Steps(n)
	if err != nil && !errors.Is(err, ErrUnsupported) {
		err = &StepError{Step: "Failed to grow the L1 table", Err: err}
	}
	return err
}

// growL1Steps is growL1's work.
func (im *Image) growL1Steps(n uint64) error {
	g := &im.g
	cs := g.ClusterSize
	if n*8 > format.MaxL1Bytes {
		return fmt.Errorf("%w: %w: L1 table would exceed %d bytes", ErrUnsupported, ErrL1TooLarge, format.MaxL1Bytes)
	}
	old := im.l1.Load()
	if n <= old.size() {
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
	table := newL1Table(n)
	buf := alignedCopy(make([]byte, nclusters*cs), im.memAlign)
	for i := range old.size() {
		e := old.load(i)
		table.store(i, e)
		format.PutL1(buf, i, e)
	}
	if err := im.writeTable(buf, n*format.TableEntrySize, off); err != nil {
		return abort(err)
	}
	if err := im.dev.Flush(); err != nil {
		return abort(err)
	}
	im.event(EvL1Grow)
	oldOff, oldSize := im.hdr.L1TableOffset, im.hdr.L1Size
	im.hdr.L1TableOffset, im.hdr.L1Size = off, uint32(n)
	err = im.writeHeader()
	if err == nil {
		err = im.dev.Flush()
	}
	if err != nil {
		// The header on the device may name either table now (a failed
		// write may have landed, a failed flush may have kept it or
		// not): keep both, identical but for the new empty entries, and
		// change neither again, or the one the header names may miss a
		// later link (TestRegress_GrowL1FlushFailureLosesNoWrites).
		// Writes are refused until the image is reopened (Q16).
		im.hdr.L1TableOffset, im.hdr.L1Size = oldOff, oldSize
		im.loseWritesLocked(err)
		return err
	}
	im.setL1(table, off)
	// Q3: the header no longer points at the old table (durably).
	oldBytes := uint64(oldSize) * 8
	return im.freeClustersLocked(oldOff, (oldBytes+cs-1)/cs)
}

// setL1 installs the active L1 table (under mu, or before the image is
// shared) for the owner and for lock-free readers.
func (im *Image) setL1(table *l1Table, off format.HostOff) {
	im.l1.Store(table)
	im.l1Off.Store(uint64(off))
	im.l1Len.Store(table.size() * format.TableEntrySize)
}
