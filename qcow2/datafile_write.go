package qcow2

import (
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// Writes to an image with an external data file (DF4-DF6 in doc.go). A
// guest cluster's data lives in the data file at its guest offset, so
// an allocation takes no host space and no refcount (DF3): none of the
// image file's space rules (space.go, fill.go, the reserve) and none of
// the early writes (Q10) are involved. The path is synchronous and
// simple: a write into an allocated cluster goes straight to the data
// file; a first write into a cluster registers it (Q7), writes the
// whole cluster (the guest data and, around it, zeros or the backing
// file's bytes, as QEMU's COW does: the data file's bytes there may be
// stale) and links it with COPIED once that write is complete. The link
// reaches the media only after the data file is flushed (DF5).

// dfWriteCluster is writeCluster for an image with a data file: n bytes
// of v at goff, inside one cluster.
func (im *Image) dfWriteCluster(goff format.GuestOff, v [][]byte, n int64) error {
	gc := im.g.GuestCluster(goff)
	for {
		if im.state.Load()&stClosed != 0 {
			return block.ErrClosed
		}
		if blocker, _ := im.allocs.Conflict(gc, 1); blocker != nil {
			blocker.Wait() // no early writes (DF4): wait for the link
			continue
		}
		if im.g.ExtendedL2 { // subclusters: datafile_xl2.go
			if done, err := im.dfxOverwrite(goff, v, n); done {
				return err
			}
			if done, err := im.dfxAllocWrite(goff, v, n); done {
				return err
			}
			continue
		}
		if done, err := im.dfOverwrite(goff, v); done {
			return err
		}
		if done, err := im.dfAllocWrite(goff, v, n); done {
			return err
		}
	}
}

// dfOverwrite writes into the cluster of goff if it is allocated (every
// allocated cluster of a data file carries COPIED, DF2); done is false
// when it is not. The lookup and the write are inside the data gate, as
// overwrite's (Q12).
func (im *Image) dfOverwrite(goff format.GuestOff, v [][]byte) (done bool, err error) {
	tok := im.gate.enter()
	e, err := im.entry(goff)
	if err != nil || im.kindOf(e) != format.ClusterNormal {
		im.gate.exit(tok)
		return err != nil, err
	}
	if err := im.checkExternal(goff, e); err != nil { // DF2
		im.gate.exit(tok)
		return true, err
	}
	if im.pausedForSnapshot(tok) {
		return false, nil
	}
	err = im.dfWritev(im.g.HostFor(e.Offset(), goff), v)
	im.gate.exit(tok)
	return true, err
}

// dfAllocWrite writes n bytes of v at goff into the guest cluster's own
// place in the data file and links it (DF4). done is false when the
// cluster was registered by someone else (it waited) or is allocated
// already: the caller looks again.
func (im *Image) dfAllocWrite(goff format.GuestOff, v [][]byte, n int64) (done bool, err error) {
	g := &im.g
	cstart := goff - format.GuestOff(g.InCluster(goff))
	reg, done, err := im.dfAcquire(goff)
	if reg == nil {
		return done, err
	}
	defer im.allocs.Release(reg)
	old, err := im.dfPlanLocked(goff)
	im.mu.Unlock()
	if err != nil || old == nil {
		return err != nil, err
	}
	if err := im.dfFillCluster(cstart, *old, goff, v, n); err != nil {
		// Nothing links the bytes written: the cluster reads as before.
		return true, err
	}
	im.df.unflushed.Store(true) // DF5: after the write completed
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return true, block.ErrClosed
	}
	if err := im.writableLocked(); err != nil {
		return true, err
	}
	if im.linkFault != nil {
		if err := im.linkFault(); err != nil {
			return true, err
		}
	}
	// No refcount to order before the link (DF3); the L2 cache's
	// write-back flushes the data file first (DF5, dfBeforeL2Write).
	if err := im.setEntry(goff, format.MakeL2(format.HostOff(cstart), true, false)); err != nil {
		return true, err
	}
	im.c.clustersAllocated.Add(1)
	im.event(EvLink)
	return true, nil
}

// dfAcquire registers the guest cluster of goff for a data file
// allocation (Q7) and returns with mu held. With no registration it
// returns with mu released: done and err when the image is not
// writable, !done when another allocation held the cluster (waited for:
// the caller looks again).
func (im *Image) dfAcquire(goff format.GuestOff) (reg *sched.Alloc[allocState], done bool, err error) {
	im.mu.Lock()
	if err := im.writableLocked(); err != nil {
		im.mu.Unlock()
		return nil, true, err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		im.mu.Unlock()
		blocker.Wait()
		return nil, false, nil
	}
	return reg, false, nil
}

// dfPlanLocked looks the cluster of goff up again under mu and makes its
// L2 table writable. It returns the entry to replace, nil when the
// cluster is allocated (overwrite it).
func (im *Image) dfPlanLocked(goff format.GuestOff) (*format.L2Entry, error) {
	e, err := im.entry(goff)
	if err != nil || im.kindOf(e) == format.ClusterNormal {
		return nil, err
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return nil, err
	}
	if e, err = im.entry(goff); err != nil {
		return nil, err
	}
	if err := im.checkExternal(goff, e); err != nil { // DF2
		return nil, err
	}
	if im.kindOf(e) == format.ClusterNormal {
		return nil, nil
	}
	return &e, nil
}

// dfFillCluster writes the cluster starting at cstart whole: n bytes of
// v at goff and, around them, what the cluster read as before (zeros,
// or the backing file's bytes when it was unallocated), as QEMU's COW
// into a data file does (the data file may hold stale bytes there).
func (im *Image) dfFillCluster(cstart format.GuestOff, old format.L2Entry, goff format.GuestOff, v [][]byte, n int64) error {
	g := &im.g
	cs := g.ClusterSize
	head := g.InCluster(goff)
	tail := cs - head - uint64(n)
	if head == 0 && tail == 0 {
		return im.dfWritev(format.HostOff(cstart), v)
	}
	src := cowZero
	if im.kindOf(old) == format.ClusterUnallocated && im.backing != nil {
		src = cowBacking
	}
	if src == cowZero || im.backingZero(cstart, head, goff+format.GuestOff(n), tail) {
		im.c.zeroPadBytes.Add(int64(head + tail))
		return im.dfWritev(format.HostOff(cstart), im.padZeros(v, head, tail))
	}
	vec, err := im.cowVec(cstart, old, cowBacking, head, tail, v)
	if err != nil {
		return err
	}
	return im.dfWritev(format.HostOff(cstart), vec)
}

// dfWritev writes v at host offset host of the data file, encrypted
// when the image is (whole sectors, numbered by their offset in the data
// file, as QEMU does and readCrypted reads them: DF1).
func (im *Image) dfWritev(host format.HostOff, v [][]byte) error {
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	if im.crypt != nil {
		// A data file's clusters sit at their guest offsets (DF1):
		// host and guest sectors are one, whichever the method's IV.
		return im.writeEncryptedTo(d, host, format.GuestOff(host), v)
	}
	return d.Writev(int64(host), v)
}

// dfBeforeL2Write is the L2 cache's write-back hook: on an image with a
// data file, the data file is flushed first if data was written for a
// link since its last flush (DF5: the data a new entry links is durable
// before the entry), then the overlap check (Q9). The lock makes a
// write-back that finds nothing to flush wait for a flush in progress,
// which may cover its data.
func (im *Image) dfBeforeL2Write(off int64, data []byte) error {
	if im.df.ext {
		if err := im.dfFlushIfNeeded(); err != nil {
			return err
		}
	}
	return im.overlapCheckL2Write(off, data)
}

// dfFlushIfNeeded flushes the data file if a write for a link came since
// its last flush.
func (im *Image) dfFlushIfNeeded() error {
	im.df.flushMu.Lock()
	defer im.df.flushMu.Unlock()
	if !im.df.unflushed.Swap(false) {
		return nil
	}
	if err := im.df.dev.Flush(); err != nil {
		im.df.unflushed.Store(true)
		return err
	}
	return nil
}

// dfFlush flushes the data file (an image's Flush: overwrites are
// durable too, B6).
func (im *Image) dfFlush() error {
	if !im.df.ext || im.df.dev == nil {
		return nil
	}
	im.df.flushMu.Lock()
	defer im.df.flushMu.Unlock()
	im.df.unflushed.Store(false)
	if err := im.df.dev.Flush(); err != nil {
		im.df.unflushed.Store(true)
		return err
	}
	return nil
}

// dfZeroRaw zeroes [off, off+n) of a raw data file (data_file_raw)
// before the L2 entries change, as QEMU's qcow2_subcluster_zeroize does
// (DF6): the data file stays the disk's raw image.
//
// Not on an encrypted image: its data file holds ciphertext, no raw
// image of anything, and the zero flags the L2 entries get say the
// range reads as zeros. Plaintext zeros there would decrypt into garbage
// wherever an entry still maps them: at once in the edge sectors of an
// unaligned range, which the encrypted zero buffers read, decrypt and
// merge (writevCrypt), and after a crash that kept the zeros but not the
// entries, in whole (sub)clusters (QEMU 7.2 has both windows).
func (im *Image) dfZeroRaw(off, n int64, flags block.Flags) error {
	if !im.df.raw || !im.df.ext || im.crypt != nil {
		return nil
	}
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	flags &= block.MayUnmap | block.Allocate
	za := max(d.Caps().ZeroAlign, d.Caps().Align, 1)
	if flags&block.Allocate == 0 || (off%za == 0 && (off+n)%za == 0) {
		return d.WriteZeroes(off, n, flags)
	}
	// An Allocate the qcow2 entries honour (its edges checked) but not
	// aligned to the data file's blocks, which the device refuses (B3):
	// QEMU's file driver zeroes it with fallocate, which writes the
	// partial blocks at its ends. The whole blocks first, with Allocate,
	// so that a refusal (ZERO_RANGE unsupported) has changed nothing;
	// then the partial ones.
	a, b := (off+za-1)/za*za, (off+n)/za*za
	if a < b {
		if err := d.WriteZeroes(a, b-a, flags); err != nil {
			return err
		}
	} else {
		a, b = off+n, off+n
	}
	if off < a {
		if err := d.WriteZeroes(off, a-off, flags&block.MayUnmap); err != nil {
			return err
		}
	}
	if b < off+n {
		return d.WriteZeroes(b, off+n-b, flags&block.MayUnmap)
	}
	return nil
}

// dfZeroRawEdge zeroes [s, s+n) of a raw data file (data_file_raw):
// the whole (sub)cluster that an unaligned zero write's edge makes (or
// finds) a zero (sub)cluster because it reads as zeros outside the
// range. QEMU 7.2's qcow2_co_pwrite_zeroes widens such an edge to its
// (sub)cluster before qcow2_subcluster_zeroize, which zeroes the data
// file over all of it (DF6): the data file stays the disk's raw image
// there too, not only over the range asked for. Called before the entry
// changes, with the guest cluster registered (Q7: no write allocates
// the (sub)cluster meanwhile, and it reads as zeros, so no guest data
// lives in those bytes) and mu not held, where zeroesRawEdges.
func (im *Image) dfZeroRawEdge(s, n int64) error {
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	return d.WriteZeroes(s, n, 0)
}

// zeroesRawEdges says whether an unaligned zero write's edges zero a
// raw data file (dfZeroRawEdge): data_file_raw, not encrypted.
func (im *Image) zeroesRawEdges() bool {
	return im.df.raw && im.df.ext && im.crypt == nil
}

// refuseDataFile is the error of what QEMU 7.2 refuses on an image with
// an external data file (DF6): compressed writes and internal snapshots
// (ENOTSUP, "Operation not supported").
func (im *Image) refuseDataFile(what string) error {
	if !im.df.ext {
		return nil
	}
	// ENOTSUP under it, as QEMU refuses them (qemu-io: "Operation not
	// supported").
	return fmt.Errorf("%w: %s on an image with an external data file (%w)", ErrUnsupported, what, block.ErrNotSupported)
}

// dfResize gives the data file the disk's new size, as QEMU 7.2's
// qcow2_co_truncate does (it grows and shrinks it with the image), and
// with data_file_raw or a preallocation (prealloc: any mode but off; the
// space of falloc and full is dfAllocate's, after it) links the
// grown range's clusters at their own offsets, the data file reaching
// the last one's end, as QEMU preallocates metadata (DF6): every
// cluster of a raw data file is allocated. Called after the L1 table
// covers size and before the header shows it (a grown data file reads
// as zeros).
func (im *Image) dfResize(cur, size int64, prealloc bool) error {
	if !im.df.ext || size <= cur {
		return nil
	}
	// To size exactly, as QEMU: a data file longer than the disk (a
	// last cluster written whole) is cut there.
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	// Bytes past the old end (a shrink that crashed after its header
	// and before its cut) were cut by dfCutStale, before Truncate's
	// zeroing of the old end's cluster (Q18).
	if err := d.Truncate(size); err != nil {
		return err
	}
	im.df.size.Store(size)
	if !im.df.raw && !prealloc {
		return nil
	}
	cs := int64(im.g.ClusterSize)
	from := cur
	if in := cur % cs; in != 0 {
		// The old end's cluster, if not allocated, is allocated as
		// QEMU's preallocation does: written whole (zeros around the
		// zeros past the old end), its data file bytes may be stale.
		e, err := im.entry(guestOff(cur))
		if err != nil {
			return err
		}
		if im.kindOf(e) != format.ClusterNormal && im.g.ExtendedL2 {
			// QEMU 7.2's preallocation with subclusters links the
			// cluster and leaves its bitmap as it was: nothing is
			// written.
			if err := im.dfLinkCluster(guestOff(cur - in)); err != nil {
				return err
			}
		} else if im.kindOf(e) != format.ClusterNormal {
			vp := getVec()
			*vp = appendZeros((*vp)[:0], block.ZeroBuf(), uint64(cs-in))
			err = im.dfWriteCluster(guestOff(cur), *vp, cs-in)
			putVec(vp)
			if err != nil {
				return err
			}
		}
		from = cur - in + cs
	}
	if err := im.dfLinkRange(from, size); err != nil {
		return err
	}
	return im.dfGrow(im.dfPreallocEnd(size))
}

// dfPreallocEnd is where QEMU 7.2's preallocation of a disk of size
// bytes leaves the data file: it writes the last cluster's COW end, so
// the data file reaches that cluster's end, or with subclusters the
// last subcluster's (measured with qemu-img create and resize).
func (im *Image) dfPreallocEnd(size int64) int64 {
	gran := int64(im.g.ClusterSize)
	if im.g.ExtendedL2 {
		gran = int64(im.g.SubclusterSize())
	}
	return (size + gran - 1) / gran * gran
}

// dfCutStale cuts a data file longer than the old size cur (a shrink
// that crashed after its header and before its cut) to cur, durably, so
// the grown range does not show those bytes. Truncate calls it before
// it zeroes the old end's cluster past cur: cut after, it would drop the
// zeros written there (encrypted zeros: the cut leaves plaintext zeros,
// which decrypt into garbage).
func (im *Image) dfCutStale(cur int64) error {
	if !im.df.ext {
		return nil
	}
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	if n, err := d.Size(); err != nil {
		return err
	} else if n > cur {
		if err := d.Truncate(cur); err != nil {
			return err
		}
		return d.Flush()
	}
	return nil
}

// dfShrunk cuts the data file to the disk's new size once the header
// shows it (nothing names the range past it any more).
func (im *Image) dfShrunk(size int64) error {
	if !im.df.ext {
		return nil
	}
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	if err := d.Truncate(size); err != nil {
		return err
	}
	im.df.size.Store(size)
	return nil
}

// dfLinkRange links every unallocated cluster of [from, to) at its own
// offset in the data file (data_file_raw's metadata preallocation): the
// data file's bytes are the disk's there already. With extended L2 the
// bitmap stays as it was, as QEMU 7.2 leaves it (a preallocation's link
// sets no allocation bits: such a cluster reads as zeros, whatever a
// raw data file holds). The entries are
// durable before the caller's header update (its flush).
func (im *Image) dfLinkRange(from, to int64) error {
	cs := int64(im.g.ClusterSize)
	for c := from / cs * cs; c < to; c += cs {
		goff := guestOff(c)
		if err := im.dfLinkCluster(goff); err != nil {
			return err
		}
	}
	return nil
}

// dfLinkCluster links the unallocated cluster of goff in place, with
// the cluster registered (Q7) and mu held.
func (im *Image) dfLinkCluster(goff format.GuestOff) error {
	for {
		im.mu.Lock()
		if err := im.writableLocked(); err != nil {
			im.mu.Unlock()
			return err
		}
		reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
		if reg == nil {
			im.mu.Unlock()
			blocker.Wait()
			continue
		}
		old, err := im.dfPlanLocked(goff)
		if err == nil && old != nil && im.kindOf(*old) == format.ClusterUnallocated {
			cl := goff - format.GuestOff(im.g.InCluster(goff)) // its own place (DF2)
			err = im.setEntry(goff, format.MakeL2(format.HostOff(cl), true, false))
		}
		im.allocs.Release(reg)
		im.mu.Unlock()
		return err
	}
}
