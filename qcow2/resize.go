package qcow2

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// This file changes the virtual size (Q18). A resize must not let a
// write that checked its range against the old size land past the new
// end (its bytes would come back when the image grew again), and a
// growth must show zeros in the new range, whatever lay there. So:
//
//	Shrink    lowers the size guests see, then waits for the write
//	          calls that checked against the old one (Image.writers) and
//	          for the queue's fast writes (the data gate), zeroes the
//	          last cluster past the new end, makes the clusters past it
//	          unallocated, and writes the header last.
//	Truncate  grows the L1 table, zeroes what the new range would show
//	          that is not zeros (the old end's cluster past the old end,
//	          if it holds data; the range the backing file reaches), makes
//	          that durable, and writes the header last.
//
// A failed header write leaves the image refusing writes (Q4). Both
// hold resizeMu, and so do ApplySnapshot (it sets the size too) and
// CreateSnapshot (it records it); SetVersion refuses while one runs.

// checkSectorSize refuses a negative new virtual size, and one that is
// not whole 512-byte sectors, as QEMU's qcow2 ("The new size must be a multiple of 512"):
// QEMU would see it rounded down, and never see the bytes past.
func checkSectorSize(size int64) error {
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrUnsupported, size)
	}
	if size%512 != 0 {
		return fmt.Errorf("%w: size %d is not a multiple of 512", ErrUnsupported, size)
	}
	return nil
}

// ErrResizeBusy: Shrink found guest writes still running about a second
// after it cut the size (a queue's owner with requests unreaped calling
// it, say), and left the size as it was; or SetVersion found a resize
// running.
var ErrResizeBusy = errors.New("qcow2: writes in flight, resize refused")

// Truncate grows the virtual size to size (qemu-img resize without
// --shrink; a smaller size is ErrUnsupported: see Shrink). As QEMU, the
// new range reads as zeros: where the backing file reaches past the old
// end it becomes zero clusters, which version 2 lacks (ErrUnsupported
// then, before anything changes).
func (im *Image) Truncate(size int64) error {
	if err := checkSectorSize(size); err != nil {
		return err
	}
	im.resizeMu.Lock()
	defer im.resizeMu.Unlock()
	return im.grow(size)
}

// TruncatePrealloc is Truncate with the clusters of the grown range
// allocated as qemu-img resize --preallocation=mode does (PreallocOff,
// PreallocMetadata, PreallocFalloc or PreallocFull; as at Create), before
// the new size shows them: their L2 entries, and with falloc their host
// space reserved, with full zeros written there. An image with a backing
// file or encrypted is refused (ErrUnsupported): the new range must read
// as zeros, which a preallocated cluster does not give there (QEMU's
// falloc and full show an encrypted image's new range as garbage), and
// so is a size that does not grow.
func (im *Image) TruncatePrealloc(size int64, mode string) error {
	switch mode {
	case PreallocOff, "":
		return im.Truncate(size)
	case PreallocMetadata, PreallocFalloc, PreallocFull:
	default:
		return fmt.Errorf("%w: preallocation %q", ErrUnsupported, mode)
	}
	if err := checkSectorSize(size); err != nil {
		return err
	}
	im.resizeMu.Lock()
	defer im.resizeMu.Unlock()
	im.mu.Lock()
	switch {
	case im.hasBackingFileLocked():
		err := fmt.Errorf("%w: preallocation=%s over a backing file", ErrUnsupported, mode)
		im.mu.Unlock()
		return err
	case im.crypt != nil || im.hdr.CryptMethod != 0:
		err := fmt.Errorf("%w: preallocation=%s of an encrypted image", ErrUnsupported, mode)
		im.mu.Unlock()
		return err
	case uint64(size) <= im.hdr.Size:
		im.mu.Unlock()
		return fmt.Errorf("%w: preallocation of a size that does not grow", ErrUnsupported)
	}
	if im.space.ahead != 0 {
		// Metadata preallocation must not reserve the data's space, nor
		// anything past the tables (Create opens without a reserve).
		// Falloc and full give the data its space themselves
		// (reserveGrowthLocked): a reserve ahead failing in the middle
		// would cut that space back to the mark, under clusters still
		// to link (reserveAhead).
		ahead := im.space.ahead
		im.space.ahead = 0
		defer func() {
			im.mu.Lock()
			im.space.ahead = ahead
			im.mu.Unlock()
		}()
	}
	im.mu.Unlock()
	return im.growPrealloc(size, mode)
}

// resizableLocked refuses to resize a version 2 image with snapshots, as
// QEMU does: version 2 does not require a snapshot to record its disk
// size, so a snapshot taken before could later be applied at the wrong
// size (mu held).
func (im *Image) resizableLocked() error {
	if im.hdr.Version < 3 && len(im.snapshots) > 0 {
		return fmt.Errorf("%w: resizing a version 2 image that has snapshots", ErrUnsupported)
	}
	return nil
}

// grow is Truncate with resizeMu held.
func (im *Image) grow(size int64) error { return im.growPrealloc(size, PreallocOff) }

// growPrealloc is grow with the grown range preallocated in mode
// (TruncatePrealloc).
func (im *Image) growPrealloc(size int64, mode string) error {
	im.mu.Lock()
	if err := im.writableLocked(); err != nil {
		im.mu.Unlock()
		return err
	}
	if err := im.resizableLocked(); err != nil {
		im.mu.Unlock()
		return err
	}
	cur := int64(im.hdr.Size)
	if size < cur {
		im.mu.Unlock()
		return fmt.Errorf("%w: shrinking an image", ErrUnsupported)
	}
	if size != cur {
		if err := im.bitmapsResizableLocked(uint64(size)); err != nil {
			im.mu.Unlock()
			return err
		}
	}
	if size > cur && im.df.raw && (im.crypt != nil || im.hdr.CryptMethod != 0) {
		// DF6 links the new clusters over the data file's zeros, which
		// read back through the cipher as garbage (QEMU 7.2 does so).
		im.mu.Unlock()
		return fmt.Errorf("%w: growing an encrypted image whose data file is raw (its new clusters would not hold encrypted zeros)", ErrUnsupported)
	}
	overBacking := im.backing != nil && im.bsize > cur && size > cur
	if cs := int64(im.g.ClusterSize); overBacking && im.hdr.Version < 3 && size > (cur+cs-1)/cs*cs {
		// Inside the old end's cluster zero buffers do, as in QEMU;
		// past it only zero clusters would.
		im.mu.Unlock()
		return ErrGrowNeedsZeroClusters
	}
	if need := im.g.L1EntriesFor(uint64(size)); need > im.l1.Load().size() {
		if err := im.growL1(need); err != nil {
			im.mu.Unlock()
			return err
		}
	}
	im.mu.Unlock()
	// Guests still see cur, so none writes past it meanwhile: writes
	// that checked against a larger size waited for the Shrink that cut
	// it, and zeroRange's own writes are not checked.
	end := cur
	if overBacking {
		end = size
	}
	// The old end's cluster to its end, past the new size too: QEMU
	// growing the image later would show what is left there.
	if cs := int64(im.g.ClusterSize); cur%cs != 0 && size > cur && end < cur-cur%cs+cs {
		data, err := im.clusterHoldsData(cur)
		if err != nil {
			return err
		}
		if data {
			end = cur - cur%cs + cs
		}
	}
	if size > cur {
		// Before the zeroing: the data file's cut of stale bytes past
		// the old end (dfResize) would drop the encrypted zeros the
		// zeroing writes into the old end's cluster past cur, leaving
		// plaintext zeros that decrypt into garbage.
		if err := im.dfCutStale(cur); err != nil {
			return fmt.Errorf("qcow2: resizing the data file: %w", err)
		}
	}
	if end > cur {
		if err := im.zeroRange(cur, end-cur, block.MayUnmap, size); err != nil {
			return fmt.Errorf("qcow2: zeroing the grown range: %w", err)
		}
	}
	if mode != PreallocOff && size > cur && !im.df.ext { // a data file's: dfResize (DF6)
		// Under the old size guests see, as the zeros above: no
		// allocation of the old end's cluster is in flight (lockIdle).
		if im.lockIdle() != nil {
			return ErrResizeBusy
		}
		err := im.writableLocked()
		if err == nil {
			// From the end of the file on, as QEMU's preallocation
			// places them (not in the clusters the L1 growth freed).
			im.freeIdx = max(im.freeIdx, im.g.HostCluster(im.space.mark()))
			var res growReserve
			if mode == PreallocFalloc || mode == PreallocFull {
				// Their space before any link, in QEMU's order.
				res, err = im.reserveGrowthLocked(mode, uint64(cur), uint64(size))
			}
			if err == nil {
				err = im.preallocateLocked(mode, uint64(cur), uint64(size), res)
				if err != nil && res.end != 0 {
					im.cutGrowthLocked(res.size)
				}
			}
			im.freeIdx = 0
		}
		im.mu.Unlock()
		if re := (*reserveError)(nil); errors.As(err, &re) {
			return re.preallocStep()
		}
		if se := (*StepError)(nil); errors.As(err, &se) {
			return se
		}
		if err != nil && mode == PreallocMetadata {
			// QEMU's preallocate_co: its table and cluster
			// allocations (qcow2_alloc_host_offset) fail so.
			return stepErrno("Allocating clusters failed", err)
		}
		if err != nil {
			return fmt.Errorf("qcow2: preallocating the grown range: %w", err)
		}
	}
	if size > cur {
		// DF6: the data file grows with the disk (raw: linked too).
		if err := im.dfResize(cur, size, mode != PreallocOff); err != nil {
			return fmt.Errorf("qcow2: resizing the data file: %w", err)
		}
		if im.df.ext && (mode == PreallocFalloc || mode == PreallocFull) {
			// QEMU 7.2's qcow2_co_truncate truncates the data file
			// with the preallocation mode too: its grown range
			// reserved (falloc) or written with zeros (full).
			if err := im.dfAllocate(cur, size, mode); err != nil {
				return fmt.Errorf("qcow2: preallocating the data file: %w", err)
			}
		}
	}
	// The zeros are durable before the size that shows them.
	return im.flushedWritable(func() error { return im.commitSizeLocked(uint64(size)) })
}

// commitSizeLocked writes size into the header (setSizeLocked). If that
// fails, the media may hold either size (Q4): what lies past the smaller
// one may read otherwise after a reopen (a growth's zero clusters, which
// a downgrade would drop; a shrink's discarded range), so the image
// refuses writes until it is reopened.
func (im *Image) commitSizeLocked(size uint64) error {
	// Q22: the bitmaps take the new size before guests do.
	im.resizeBitmapsLocked(size)
	if err := im.setSizeLocked(size); err != nil {
		// The media may hold either size: the bitmaps are left IN_USE.
		im.stopBitmapsLocked()
		im.loseWritesLocked(err)
		return err
	}
	return nil
}

// clusterHoldsData reports whether the guest cluster of off may hold
// bytes other than zeros, once no allocation of it is in flight (one a
// queue planned before a Shrink may still be writing past the end).
func (im *Image) clusterHoldsData(off int64) (bool, error) {
	gc := im.g.GuestCluster(guestOff(off))
	for {
		im.mu.Lock()
		reg, _, blocker := im.allocs.TryAcquire(gc, 1)
		if reg == nil {
			im.mu.Unlock()
			blocker.Wait()
			continue
		}
		e, err := im.entry(guestOff(off))
		im.allocs.Release(reg)
		im.mu.Unlock()
		t := im.kindOf(e) // DF2: allocated at data file offset 0
		return t == format.ClusterNormal || t == format.ClusterCompressed, err
	}
}

// Shrink reduces the virtual size to size (qemu-img resize --shrink); a
// size at or above the current one is Truncate. It cuts the size guests
// see, waits for the writes that checked against the old one (a
// refusal, ErrResizeBusy, changes nothing), zeroes the last cluster
// past the new end if it holds data (QEMU does not zero it when it
// grows the image again), discards the clusters wholly past the new end
// (unallocated: QEMU's full discard), and only then, after a flush,
// writes the new size into the header. A crash or an I/O error before
// the header leaves the old size with some data past the new end gone,
// never a table pointing at freed clusters; a failed header write
// leaves the image refusing writes (Q4: the file may hold either size).
// The L1 table keeps its length.
func (im *Image) Shrink(size int64) error {
	if err := checkSectorSize(size); err != nil {
		return err
	}
	im.resizeMu.Lock()
	defer im.resizeMu.Unlock()
	return im.resize(size)
}

// resize is Shrink with resizeMu held (ApplySnapshot resizes too).
func (im *Image) resize(size int64) error {
	cur, err := im.Size()
	if err != nil {
		return err
	}
	if size >= cur {
		return im.grow(size)
	}
	if size < 0 {
		return fmt.Errorf("%w: negative size %d", ErrUnsupported, size)
	}
	im.mu.Lock()
	if err := im.writableLocked(); err != nil {
		im.mu.Unlock()
		return err
	}
	if err := im.resizableLocked(); err != nil {
		im.mu.Unlock()
		return err
	}
	if err := im.bitmapsResizableLocked(uint64(size)); err != nil {
		im.mu.Unlock()
		return err
	}
	im.vsize.Store(uint64(size))
	im.mu.Unlock()
	// Q22: the zeroing and the discard below change the cut range,
	// which the bitmaps drop if the shrink goes through (as QEMU's,
	// which marks nothing); if it fails, the range is the guests' again,
	// with its bits set before they see it.
	restore := func(err error) error {
		im.markDirty(size, cur-size)
		im.mu.Lock()
		im.vsize.Store(im.hdr.Size)
		im.mu.Unlock()
		return err
	}
	// Writes that passed their size check before the cut: synchronous
	// ones hold the writers gate, a queue's fast ones the data gate (and
	// check the size again inside it). A queue's allocator checks under
	// mu and registers its clusters, which the zeroing and the discard
	// wait for.
	if !im.writers.syncWithin(im.idleWaitOr()) || !im.gate.syncWithin(im.idleWaitOr()) {
		return restore(ErrResizeBusy)
	}
	cs := int64(im.g.ClusterSize)
	end := (size + cs - 1) / cs * cs
	if end > size {
		// To the cluster's end, past the old size too (bytes a QEMU
		// shrink left there).
		data, err := im.clusterHoldsData(size)
		if err == nil && data {
			err = im.zeroRange(size, end-size, 0, end)
		}
		if err != nil {
			return restore(err)
		}
	}
	if end < cur {
		if err := im.discardClusters(end/cs, (cur+cs-1)/cs, discardFull); err != nil {
			return restore(err)
		}
	}
	if err := im.Flush(); err != nil {
		return restore(err)
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		im.markDirty(size, cur-size)
		im.vsize.Store(im.hdr.Size)
		return err
	}
	if err := im.commitSizeLocked(uint64(size)); err != nil {
		return err
	}
	return im.dfShrunk(size) // DF6: the data file shrinks with the disk
}

// dfAllocate gives the data file's range [from, to) its space, as the
// file driver preallocates it: reserved for falloc (zeros written where
// the file cannot reserve), zeros written for full.
func (im *Image) dfAllocate(from, to int64, mode string) error {
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	if err := reserveData(d, from, to, mode); err != nil {
		return err
	}
	return d.Flush()
}
