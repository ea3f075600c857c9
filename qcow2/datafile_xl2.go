package qcow2

import (
	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Writes to an extended-L2 image with an external data file (DF4), as
// QEMU 7.2's qcow2_alloc_host_offset does them there: the cluster's
// host offset is its guest offset, so a first write into a cluster and
// a write into unallocated subclusters of an allocated one both write
// in place, and only the bytes QEMU's calculate_l2_meta names (the
// guest data and the COW of the partial subclusters at its ends,
// xcowRange) are written; the link sets those subclusters' allocation
// bits and clears their zero bits. Subclusters left unallocated keep
// whatever the data file holds there, unseen. As dfAllocWrite: the
// write is synchronous, registered per guest cluster (Q7), without
// early writes, refcounts or host space (DF3), and the link reaches the
// media only after the data file is flushed (DF5).

// dfxOverwrite writes into the cluster of goff in place when every
// subcluster the n bytes touch is allocated; done is false when not.
// The lookup and the write are inside the data gate (Q12).
func (im *Image) dfxOverwrite(goff format.GuestOff, v [][]byte, n int64) (done bool, err error) {
	tok := im.gate.enter()
	e, bm, err := im.xentry(goff) // DF2: checkExternal
	first, last := im.xsubRange(goff, n)
	if err != nil || !xallAllocatedIn(e, bm, first, last, true) {
		im.gate.exit(tok)
		return err != nil, err
	}
	if im.pausedForSnapshot(tok) {
		return false, nil
	}
	err = im.dfWritev(im.g.HostFor(e.Offset(), goff), v)
	im.gate.exit(tok)
	return true, err
}

// dfxAllocWrite writes n bytes of v at goff and the COW around them into
// the cluster's own place in the data file and links the subclusters
// written. done is false when the cluster was under another allocation
// (it waited) or every touched subcluster is allocated: the caller
// looks again.
func (im *Image) dfxAllocWrite(goff format.GuestOff, v [][]byte, n int64) (done bool, err error) {
	g := &im.g
	cstart := goff - format.GuestOff(g.InCluster(goff))
	reg, done, err := im.dfAcquire(goff)
	if reg == nil {
		return done, err
	}
	defer im.allocs.Release(reg)
	x, old, ok, err := im.dfxPlanLocked(goff, n)
	im.mu.Unlock()
	if err != nil || !ok {
		return err != nil, err
	}
	if err := im.dfxFill(cstart, old, &x, goff, v, n); err != nil {
		// Nothing links the bytes written: they lie in subclusters
		// that read as before (unallocated or zero ones).
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
	a, b := g.SubIndex(x.from), g.SubIndex(x.to-1)+1
	bm := (x.bitmap | format.SubAllocRange(a, b)) &^ format.SubZeroRange(a, b)
	// No refcount to order before the link (DF3); the L2 cache's
	// write-back flushes the data file first (DF5, dfBeforeL2Write).
	if err := im.setXEntry(goff, format.MakeL2(format.HostOff(cstart), true, false), bm); err != nil {
		return true, err
	}
	if !x.keep {
		im.c.clustersAllocated.Add(1)
	}
	im.event(EvLink)
	return true, nil
}

// dfxPlanLocked looks the cluster of goff up again under mu, makes its
// L2 table writable and plans the write of n bytes at goff: the old
// entry and what xl2Alloc says of it. ok is false when every touched
// subcluster turned out allocated (write in place).
func (im *Image) dfxPlanLocked(goff format.GuestOff, n int64) (x xl2Alloc, old format.L2Entry, ok bool, err error) {
	first, last := im.xsubRange(goff, n)
	e, bm, err := im.xentry(goff)
	if err != nil || xallAllocatedIn(e, bm, first, last, true) {
		return x, 0, false, err
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return x, 0, false, err
	}
	if e, bm, err = im.xentry(goff); err != nil || xallAllocatedIn(e, bm, first, last, true) {
		return x, 0, false, err
	}
	// An allocated entry without COPIED (Check reports it: DF3) is
	// replaced as QEMU's handle_alloc does, by the same host cluster:
	// its allocated subclusters are copied (keep false).
	x = xl2Alloc{bitmap: bm, keep: im.kindOf(e) == format.ClusterNormal && e.Copied()}
	in := im.g.InCluster(goff)
	x.from, x.to = im.xcowRange(e, bm, in, in+uint64(n), x.keep)
	return x, e, true, nil
}

// dfxFill writes the bytes [x.from, x.to) of the cluster at cstart into
// the data file: the n guest bytes of v at goff and, around them, what
// the guest read there under the old entry (QEMU's perform_cow reads
// through the image), zeros without reading when that reads as zeros.
// An encrypted image's bytes go as ciphertext (dfWritev).
func (im *Image) dfxFill(cstart format.GuestOff, old format.L2Entry, x *xl2Alloc, goff format.GuestOff, v [][]byte, n int64) error {
	g := &im.g
	in, _, headLen, tailLen := x.span(g, goff, n)
	at := format.HostOff(cstart) + format.HostOff(x.from)
	if headLen == 0 && tailLen == 0 {
		return im.dfWritev(at, v)
	}
	if im.xreadsZero(old, x.bitmap, cstart, x.from, in) && im.xreadsZero(old, x.bitmap, cstart, in+uint64(n), x.to) {
		im.c.zeroPadBytes.Add(int64(headLen + tailLen))
		return im.dfWritev(at, im.padZeros(v, headLen, tailLen))
	}
	buf := block.AlignedBuf(int(g.ClusterSize), im.memAlign)
	read := im.xreadOld
	if im.crypt != nil {
		read = im.xreadOldCrypt
	}
	if err := read(buf, old, x.bitmap, cstart, x.from, in); err != nil {
		return err
	}
	if err := read(buf, old, x.bitmap, cstart, in+uint64(n), x.to); err != nil {
		return err
	}
	vec := make([][]byte, 0, len(v)+2)
	if headLen > 0 {
		vec = append(vec, buf[x.from:in])
	}
	vec = append(vec, v...)
	if tailLen > 0 {
		vec = append(vec, buf[x.to-tailLen:x.to])
	}
	im.c.cowBytes.Add(int64(headLen + tailLen))
	return im.dfWritev(at, vec)
}
