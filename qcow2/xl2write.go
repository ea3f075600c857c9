package qcow2

import (
	"math/bits"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

// Writing images with extended L2 entries (QEMU 5.2+, subclusters). The
// write of one cluster goes one of two ways:
//
//   - in place (xoverwrite), when the cluster is allocated with COPIED
//     and every subcluster the write touches is allocated: no lock, no
//     metadata, inside the data gate (Q12), as overwrite;
//   - through an allocation (xallocWrite), registered per guest cluster
//     (Q7) like allocWrite: a new host cluster when the cluster has
//     none, is compressed or shared (QEMU handle_alloc), or the same host
//     cluster when it has one with COPIED (QEMU handle_copied,
//     keep_old_clusters). The bytes written are the guest data plus a
//     COW range around it (xcowRange, QEMU calculate_l2_meta) that never
//     reaches past the subclusters it must fill; the link sets their
//     allocation bits and clears their zero bits.
//
// Early writes (Q10) are never accepted: an early writer's subclusters
// would not be marked allocated by the link. Writers of the cluster wait
// for the allocation instead (acceptsEarly is false while st.ready is).
// Everything else follows allocwrite.go: Q1 (the link depends on the
// refcount cache), Q2 (bytes around the data written into non-fresh
// space are flushed before the link), Q3 (the old cluster of a shared
// entry is freed after the link), Q5 (zeroing before the data).

// xl2Alloc is what an allocation of an extended-L2 cluster adds to
// allocation: the old bitmap, the COW range and whether the host cluster
// is the old one.
type xl2Alloc struct {
	bitmap   uint64 // the old entry's bitmap
	from, to uint64 // bytes of the cluster written: data and COW around it
	keep     bool   // host cluster is the old entry's (QEMU keep_old)
}

// xwriteCluster writes n bytes of v at goff (inside one cluster) into an
// extended-L2 image; done is false when the caller must look again (see
// writeCluster).
func (im *Image) xwriteCluster(goff format.GuestOff, v [][]byte, n int64) (done bool, err error) {
	if done, err := im.xoverwrite(goff, v, n); done {
		return true, err
	}
	return im.xallocWrite(goff, v, n)
}

// xsubRange is the subclusters [first, last] that n bytes at goff touch.
func (im *Image) xsubRange(goff format.GuestOff, n int64) (first, last uint) {
	in := im.g.InCluster(goff)
	return im.g.SubIndex(in), im.g.SubIndex(in + uint64(n) - 1)
}

// xallAllocated reports whether entry e is a normal cluster with COPIED
// whose subclusters [first, last] are all allocated: a write there needs
// no metadata change.
func xallAllocated(e format.L2Entry, bm uint64, first, last uint) bool {
	return xallAllocatedIn(e, bm, first, last, false)
}

// xallAllocatedIn is xallAllocated in an image with an external data
// file when external (DF2: an entry allocated at host offset 0 is
// normal).
func xallAllocatedIn(e format.L2Entry, bm uint64, first, last uint, external bool) bool {
	want := format.SubAllocRange(first, last+1)
	return e.TypeIn(external) == format.ClusterNormal && e.Copied() && bm&want == want
}

// xoverwrite is overwrite for extended L2: in place when every touched
// subcluster is allocated in a COPIED cluster.
func (im *Image) xoverwrite(goff format.GuestOff, v [][]byte, n int64) (done bool, err error) {
	tok := im.gate.enter()
	e, bm, err := im.xentry(goff)
	first, last := im.xsubRange(goff, n)
	if err != nil || !xallAllocatedIn(e, bm, first, last, im.df.ext) {
		im.gate.exit(tok)
		return err != nil, err
	}
	if im.pausedForSnapshot(tok) {
		return false, nil
	}
	if err := im.overlapCheckData(e.Offset()); err != nil {
		im.gate.exit(tok)
		im.mu.Lock()
		err = im.markCorrupt(err)
		im.mu.Unlock()
		return true, err
	}
	err = im.writeHost(im.g.HostFor(e.Offset(), goff), goff, v)
	im.gate.exit(tok)
	return true, err
}

// xallocWrite is allocWrite for extended L2.
func (im *Image) xallocWrite(goff format.GuestOff, v [][]byte, n int64) (done bool, err error) {
	p, x, blocker, err := im.xbeginAlloc(goff, n)
	if blocker != nil {
		blocker.Wait()
		return false, nil
	}
	if p.reg == nil {
		return err != nil, err
	}
	defer im.allocs.Release(p.reg)
	cowed, err := im.xwriteWithCOW(&p, &x, v, n)
	early := p.st.seal() // always 0: never ready for early writes
	im.mu.Lock()
	defer im.mu.Unlock()
	return true, im.xcommitAllocLocked(&p, &x, cowed, err, early)
}

// xbeginAlloc is beginAlloc for extended L2.
func (im *Image) xbeginAlloc(goff format.GuestOff, n int64) (p allocation, x xl2Alloc, blocker *sched.Alloc[allocState], err error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.xbeginAllocLocked(goff, n)
}

// xbeginAllocLocked is beginAllocLocked for extended L2 (a queue's
// allocator plans a batch under one hold of mu with it): p.reg is nil
// when the cluster is under another allocation (blocker) or every
// subcluster the n bytes at goff touch turned out allocated.
func (im *Image) xbeginAllocLocked(goff format.GuestOff, n int64) (p allocation, x xl2Alloc, blocker *sched.Alloc[allocState], err error) {
	if err := im.writableLocked(); err != nil { // as beginAllocLocked
		return allocation{}, x, nil, err
	}
	reg, _, blocker := im.allocs.TryAcquire(im.g.GuestCluster(goff), 1)
	if reg == nil {
		return allocation{}, x, blocker, nil
	}
	p, x, err = im.xplanAllocLocked(goff, n)
	if err != nil || p.st == nil {
		im.allocs.Release(reg)
		return allocation{}, x, nil, err
	}
	p.reg = reg
	reg.SetState(p.st)
	return p, x, nil, nil
}

// xplanAllocLocked is planAllocLocked for extended L2: p.st is nil when
// every touched subcluster turned out allocated (overwrite in place).
func (im *Image) xplanAllocLocked(goff format.GuestOff, n int64) (p allocation, x xl2Alloc, err error) {
	first, last := im.xsubRange(goff, n)
	e, bm, err := im.xentry(goff)
	if err != nil || xallAllocatedIn(e, bm, first, last, im.df.ext) {
		return allocation{}, x, err
	}
	if err := im.ensureL2Locked(goff); err != nil {
		return allocation{}, x, err
	}
	if e, bm, err = im.xentry(goff); err != nil {
		return allocation{}, x, err
	}
	x = xl2Alloc{bitmap: bm, keep: im.kindOf(e) == format.ClusterNormal && e.Copied()}
	in := im.g.InCluster(goff)
	x.from, x.to = im.xcowRange(e, bm, in, in+uint64(n), x.keep)
	p = allocation{goff: goff, old: e}
	var host format.HostOff
	if x.keep {
		if err := im.overlapCheckData(e.Offset()); err != nil {
			return allocation{}, x, im.markCorrupt(err)
		}
		host, p.reuse = e.Offset(), true
	} else {
		if host, p.fresh, err = im.allocClustersLocked(1); err != nil {
			return allocation{}, x, err
		}
		im.c.clustersAllocated.Add(1)
		im.noteAlloc(uint64(goff)) // prealloc-fill=auto's judge (fill_adapt.go)
	}
	p.st = newAllocState(host)
	return p, x, nil
}

// xcowRange is QEMU's calculate_l2_meta for one cluster: the bytes
// [from, to) of the cluster that the allocation writes, around the guest
// data [start, end). A new cluster (keep false) copies every allocated
// subcluster of the old one (NORMAL and _ALLOC sources skip only the
// leading and trailing unallocated or zero subclusters), the whole
// cluster from a compressed one, and only the partial subclusters at
// the ends otherwise. The old host cluster (keep) needs COW only in a
// partial subcluster that is not allocated yet.
func (im *Image) xcowRange(e format.L2Entry, bm uint64, start, end uint64, keep bool) (from, to uint64) {
	g := &im.g
	sb := g.SubclusterBits()
	scs := g.SubclusterSize()
	cs := g.ClusterSize
	first, last := g.SubIndex(start), g.SubIndex(end-1)
	alloc := uint32(bm)
	t0, _ := im.subRangeType(e, bm, first)
	t1, _ := im.subRangeType(e, bm, last)
	allocated := e.Offset() != 0 || e.AllocatedAtZero(im.df.ext) // DF2
	switch {
	case keep && t0 == format.SubNormal:
		from = start
	case keep:
		from = uint64(first) << sb
	case t0 == format.SubCompressed:
		from = 0
	case allocated:
		from = uint64(min(first, uint(bits.TrailingZeros32(alloc)))) << sb
	default:
		from = uint64(first) << sb
	}
	switch {
	case keep && t1 == format.SubNormal:
		to = end
	case keep:
		to = (end + scs - 1) &^ (scs - 1)
	case t1 == format.SubCompressed:
		to = cs
	case allocated:
		to = cs - uint64(min(format.SubclustersPerCluster-1-last, uint(bits.LeadingZeros32(alloc))))<<sb
	default:
		to = (end + scs - 1) &^ (scs - 1)
	}
	return from, to
}

// xwriteWithCOW writes the guest data and the COW range around it
// [x.from, x.to) into the host cluster of p, the seed's way per range:
// nothing around the data on fresh space, one efficient zeroing of the
// range where the old contents read as zeros, else the old contents as
// the guest saw them (xreadOld). It reports whether it wrote bytes
// around the data into non-fresh space (Q2). mu is not held.
func (im *Image) xwriteWithCOW(p *allocation, x *xl2Alloc, v [][]byte, n int64) (bool, error) {
	if im.crypt != nil {
		return im.xwriteWithCOWCrypt(p, x, v, n)
	}
	return im.xwriteWithCOWZero(p, x, v, n, im.xzeroAround(p, x, n))
}

// xwriteWithCOWZero is xwriteWithCOW on an image without encryption when
// the caller knows already whether the COW range around the data reads
// as zeros (zero: xzeroAround).
func (im *Image) xwriteWithCOWZero(p *allocation, x *xl2Alloc, v [][]byte, n int64, zero bool) (bool, error) {
	if w, ok := im.xplainFill(p, x, v, n, zero); ok {
		return w.cowed, im.dev.Writev(w.off, w.vec)
	}
	g := &im.g
	host := p.st.host
	in, cstart, headLen, tailLen := x.span(g, p.goff, n)
	if zero {
		// Preallocation on space that is not fresh (xplainFill). Not
		// in a kept cluster: its data may run over allocated
		// subclusters, which reads and a crash would see as zeros
		// between the zeroing and the data (review 46); the zeros go
		// around the data in one write there, at most a subcluster
		// at each end.
		if !x.keep {
			if done, err := im.zeroThenWrite(host+format.HostOff(x.from), x.to-x.from, g.HostFor(host, p.goff), v); done {
				return err == nil, err
			}
		}
		return !p.fresh, im.dev.Writev(int64(host)+int64(x.from), im.padZeros(v, headLen, tailLen))
	}
	buf := block.AlignedBuf(int(g.ClusterSize), im.memAlign)
	if err := im.xreadOld(buf, p.old, x.bitmap, cstart, x.from, in); err != nil {
		return false, err
	}
	if err := im.xreadOld(buf, p.old, x.bitmap, cstart, in+uint64(n), x.to); err != nil {
		return false, err
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
	return true, im.dev.Writev(int64(host)+int64(x.from), vec)
}

// xzeroAround reports whether the COW range of x around the n guest
// bytes at p.goff reads as zeros under the old entry.
func (im *Image) xzeroAround(p *allocation, x *xl2Alloc, n int64) bool {
	in, cstart, _, _ := x.span(&im.g, p.goff, n)
	return im.xreadsZero(p.old, x.bitmap, cstart, x.from, in) &&
		im.xreadsZero(p.old, x.bitmap, cstart, in+uint64(n), x.to)
}

// xplainFill is plainFill for extended L2: the one write that fills the
// COW range [x.from, x.to) of p with the guest data when nothing needs
// reading or zeroing first (zero: the range around the data reads as
// zeros, xzeroAround): the data alone when there is no COW range or the
// space is fresh, else (no preallocation) the data with zero buffers
// around it. ok is false when the old contents must be read, or, with
// preallocation on space that is not fresh, zeroed first. Unlike
// plainFill it never marks the allocation ready: early writers would
// not have their subclusters marked allocated by the link.
func (im *Image) xplainFill(p *allocation, x *xl2Alloc, v [][]byte, n int64, zero bool) (w fillWrite, ok bool) {
	if im.crypt != nil {
		return fillWrite{}, false
	}
	g := &im.g
	host := p.st.host
	_, _, headLen, tailLen := x.span(g, p.goff, n)
	switch {
	case headLen == 0 && tailLen == 0:
		return fillWrite{off: int64(g.HostFor(host, p.goff)), vec: v}, true
	case !zero:
		return fillWrite{}, false
	case im.prealloc && p.fresh:
		im.c.freshSkips.Add(1)
		return fillWrite{off: int64(g.HostFor(host, p.goff)), vec: v}, true
	case im.prealloc:
		return fillWrite{}, false // zeroThenWrite
	}
	return fillWrite{off: int64(host) + int64(x.from), vec: im.padZeros(v, headLen, tailLen), cowed: !p.fresh}, true
}

// xreadsZero reports whether bytes [from, to) of the cluster at guest
// offset cstart read as zeros under the old entry (e, bm), without
// reading data (false negatives are fine).
func (im *Image) xreadsZero(e format.L2Entry, bm uint64, cstart format.GuestOff, from, to uint64) bool {
	g := &im.g
	for from < to {
		t, cnt := im.subRangeType(e, bm, g.SubIndex(from))
		end := min(to, uint64(g.SubIndex(from)+cnt)<<g.SubclusterBits())
		switch t {
		case format.SubZeroPlain, format.SubZeroAlloc:
		case format.SubUnallocatedPlain, format.SubUnallocatedAlloc:
			if !im.backingZero(cstart+format.GuestOff(from), end-from, 0, 0) {
				return false
			}
		default:
			return false
		}
		from = end
	}
	return true
}

// xreadOld fills buf[from:to] (buf is one cluster) with what the guest
// read at bytes [from, to) of the cluster at cstart under the old entry
// (e, bm): QEMU's perform_cow reads through the image at the guest
// offset, so each subcluster gives its own contents.
func (im *Image) xreadOld(buf []byte, e format.L2Entry, bm uint64, cstart format.GuestOff, from, to uint64) error {
	g := &im.g
	for from < to {
		t, cnt := im.subRangeType(e, bm, g.SubIndex(from))
		end := min(to, uint64(g.SubIndex(from)+cnt)<<g.SubclusterBits())
		switch t {
		case format.SubNormal:
			if err := im.xreadHost(buf[from:end], e.Offset()+format.HostOff(from)); err != nil {
				return err
			}
		case format.SubZeroPlain, format.SubZeroAlloc:
			clear(buf[from:end])
		case format.SubUnallocatedPlain, format.SubUnallocatedAlloc:
			if err := im.readBacking(buf[from:end], cstart+format.GuestOff(from)); err != nil {
				return err
			}
		case format.SubCompressed:
			tmp := im.clusterBuf()
			err := im.readCompressed(*tmp, e)
			copy(buf[from:end], (*tmp)[from:end])
			im.putClusterBuf(tmp)
			if err != nil {
				return err
			}
		default:
			return corruptf("l2_bitmap", bm, "invalid subcluster in L2 entry %#x", uint64(e))
		}
		from = end
	}
	return nil
}

// subRangeType is format.SubclusterRangeType in this image (DF2: with a
// data file, an entry allocated at host offset 0 is allocated).
func (im *Image) subRangeType(e format.L2Entry, bm uint64, first uint) (format.SubclusterType, uint) {
	return format.SubclusterRangeTypeIn(e, bm, first, im.df.ext)
}

// xreadHost reads the host bytes of allocated subclusters at host: from
// the image's device, or from the data file (DF1).
func (im *Image) xreadHost(b []byte, host format.HostOff) error {
	if im.df.ext {
		return im.readData(host, [][]byte{b})
	}
	return block.ReadAt(im.dev, b, int64(host))
}

// xcommitAllocLocked is commitAllocLocked for extended L2: the link sets
// the allocation bits of the subclusters written and clears their zero
// bits (QEMU qcow2_alloc_cluster_link_l2).
func (im *Image) xcommitAllocLocked(p *allocation, x *xl2Alloc, cowed bool, werr error, early int) error {
	if im.closed { // as commitAllocLocked
		p.st.finish(block.ErrClosed)
		return block.ErrClosed
	}
	if werr != nil && early == 0 {
		im.undoAllocLocked(p)
		p.st.finish(werr)
		return werr
	}
	g := &im.g
	a := g.SubIndex(x.from)
	b := g.SubIndex(x.to-1) + 1
	bm := (x.bitmap | format.SubAllocRange(a, b)) &^ format.SubZeroRange(a, b)
	lerr := im.xlinkLocked(p.goff, p.st.host, bm, cowed || im.lazy) // as commitAllocLocked
	p.st.finish(lerr)
	if lerr != nil {
		im.undoAllocLocked(p)
		return lerr
	}
	if !p.reuse {
		if ferr := im.freeEntryLocked(p.old, false, false); ferr != nil && werr == nil {
			werr = ferr
		}
	}
	return werr
}

// xlinkLocked is linkLocked with the subcluster bitmap.
func (im *Image) xlinkLocked(goff format.GuestOff, host format.HostOff, bitmap uint64, flushFirst bool) error {
	if im.linkFault != nil {
		if err := im.linkFault(); err != nil {
			return err
		}
	}
	if flushFirst {
		im.l2c.DependsOnFlush()
	}
	if !im.lazy {
		if err := im.l2c.SetDependency(im.rbc); err != nil { // Q1
			return err
		}
	}
	if err := im.setXEntry(goff, format.MakeL2(host, true, false), bitmap); err != nil {
		return err
	}
	im.event(EvLink)
	return nil
}

// span places n guest bytes at goff inside the range [x.from, x.to) of
// their cluster: the offset in the cluster, the cluster's guest start,
// and the bytes of the range before and after the data (the COW areas).
func (x *xl2Alloc) span(g *format.Geometry, goff format.GuestOff, n int64) (in uint64, cstart format.GuestOff, headLen, tailLen uint64) {
	in = g.InCluster(goff)
	return in, goff - format.GuestOff(in), in - x.from, x.to - in - uint64(n)
}
