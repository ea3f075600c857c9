package qcow2

import (
	"fmt"
	"maps"
	"slices"

	"github.com/qring/qring/qcow2/format"
)

// Rebuilding the refcount structures (QEMU's rebuild_refcount_structure),
// for a repair that cannot trust the stored refcounts: a refcount block
// that something else also references, or one outside the image. Check
// has counted every reference from the mapping (checker.ref); the old
// refcount table and blocks are dropped from those counts, new blocks
// and a new table holding them are written in clusters nothing
// references that are not old structures (in a file where QEMU's
// rebuild puts them, past its end where none is free; placeRebuildLikeQemu),
// and the header switches to them after a flush (Q4):
//   - a crash before the switch leaves the old structures in force, and
//     the new ones as unreferenced clusters;
//   - after it, the old structures are free space, referenced by nothing.
// Nothing the old structures share with data or metadata is written, and
// no cluster any table references is freed or written over: Check
// refuses to rebuild when a reference lies past the end of the file
// (checker.fatal, checker.noRebuild), where the new structures may go.

// rebuildAndCheck rebuilds the refcount structures from c's counts, then
// checks (and repairs: COPIED flags) again against the new ones. Called
// from checkLocked with mu held and nothing in flight (Check's lockIdle).
func (im *Image) rebuildAndCheck(c *checker, o CheckOptions) (*CheckResult, error) {
	r := c.r
	// As qemu-img's words, after the comparison's lines; why is
	// c.untrusted, reported before.
	c.msg("Rebuilding refcount structure")
	// The old structures stay counted: the check after the switch frees
	// them as leaks, with qemu-img's "Repairing cluster" lines.
	if err := im.rebuildRefcountsLocked(c.ref, im.g.RefcountOrder, true); err != nil {
		c.ioError(err)
		c.msg("ERROR rebuilding the refcount structures: %v", err)
		r.CorruptionsFixed, r.LeaksFixed = 0, 0 // nothing was
		return r, nil
	}
	if err := im.cureDamageLocked(); err != nil {
		c.ioError(err)
		c.msg("ERROR after rebuilding the refcount structures: %v", err)
		return r, nil
	}
	o.rebuilt = true
	r2, err := im.checkLocked(o, RepairAll)
	if r2 == nil {
		return r, err
	}
	// The old structures' leaks the second pass fixed are not reported,
	// as in QEMU (it restores its result after that pass).
	r2.Leaks -= min(r2.Leaks, r2.LeaksFixed)
	r2.LeaksFixed = 0
	// What the first pass found is fixed, unless the second finds it,
	// and what it fixed before its comparison stays fixed (a refcount
	// block outside the image the file grew over, as QEMU's
	// corruptions_fixed, which its rebuild keeps).
	r2.CorruptionsFixed += max(r.Corruptions-r2.Corruptions, 0) + r.CorruptionsFixed
	r2.LeaksFixed += max(r.Leaks-r2.Leaks, 0)
	// The refcounts the first pass could not read are in the new
	// structures (QEMU keeps those errors, but its rebuild fails there:
	// it would write over the damaged entry's block).
	r2.CheckErrors += r.CheckErrors - c.refcountErrs
	if r.Err != nil {
		r2.Err = r.Err
	}
	r2.Messages = append(r.Messages, r2.Messages...)
	return r2, err
}

// rebuildRefcountsLocked writes new refcount structures holding counts
// (one per host cluster of the file, the old structures included) with
// refcounts of 1<<order bits, and switches the header to them; the order
// changes in the same header write, in its first sector (FM6), with the
// table. The old structures' clusters are counted free in the new ones.
// With check, counts are a Check's: those only the old structures used
// stay counted 1, for its leak repair to free, and the bitmaps' autoclear
// bit goes. Without, they are the stored refcounts (SetRefcountBits),
// which count the bitmaps' clusters: the bitmaps stay (Q22).
func (im *Image) rebuildRefcountsLocked(counts []uint32, order uint32, check bool) error {
	keepOld := check
	og := &im.g // the old structures
	ng := format.NewGeometry(og.ClusterBits, order, og.ExtendedL2)
	g := &ng // the new ones
	cs := g.ClusterSize
	// Whatever the caches hold goes out first: nothing may be written
	// back through an old block once the new ones are in force.
	if err := im.flushLocked(); err != nil {
		return err
	}
	n := uint64(len(counts)) // counts is Check's, used by nobody after this
	// oldRefs: the references of the old structures to each cluster,
	// as counts holds them.
	oldRefs := map[uint64]uint32{}
	uncount := func(off format.HostOff, size uint64) {
		if size == 0 {
			return
		}
		for k := g.HostCluster(off); k <= g.HostCluster(off+format.HostOff(size)-1) && k < n; k++ {
			oldRefs[k]++
		}
	}
	uncount(im.hdr.RefcountTableOffset, uint64(im.hdr.RefcountTableClusters)*cs)
	oldBlocks := make([]format.HostOff, 0, len(im.reftable))
	for i, b := range im.reftable {
		if b != 0 {
			oldBlocks = append(oldBlocks, b)
			// (A Check counts no block for an entry with reserved
			// bits, as QEMU's check_refblocks.)
			if g.HostCluster(b) < n && (!keepOld || !im.damage.reservedRefblocks[uint64(i)]) {
				uncount(b, cs)
			}
		}
	}
	for k, m := range oldRefs {
		switch {
		case !keepOld:
			counts[k] -= min(m, counts[k])
		case counts[k] > m:
			// Something else uses it too (a damaged block over
			// data): it drops to those other uses, or a crash before
			// the leak repair after the switch would leave COPIED on a
			// count of 2 (QEMU writes the count with the old
			// structures' references, and that repair drops them).
			counts[k] -= m
		default:
			// Only the old structures use it: its count stays, as
			// QEMU's rebuild writes it, a leak the repair after the
			// switch frees ("Repairing cluster N refcount=2
			// reference=0" for a block two entries name).
		}
	}
	if max := maxRefcount(order); max < ^uint64(0) {
		for k, v := range counts {
			if uint64(v) <= max {
				continue
			}
			if !check {
				return fmt.Errorf("%w: cluster %d has %d references, more than %d-bit refcounts hold", ErrUnsupported, k, v, 1<<g.RefcountOrder)
			}
			// As QEMU's rebuild: the largest count the width holds,
			// which keeps the cluster in use; the check after the
			// switch reports the overflow again (a corruption left).
			counts[k] = uint32(max)
		}
	}
	var p rebuildPlace
	var err error
	if check && !im.dcap.Fixed {
		p, err = im.placeRebuildLikeQemu(g, counts, oldBlocks)
	} else {
		p, err = im.placeRebuild(g, counts, oldBlocks)
	}
	if err != nil {
		return err
	}
	for _, k := range p.taken {
		im.takeSpace(g.HostClusterOff(k), g.HostClusterOff(k+1)) // SP1, SP4
		if k >= uint64(len(counts)) {
			counts = append(counts, make([]uint32, k+1-uint64(len(counts)))...)
		}
		counts[k] = 1 // the new structures
	}
	perTable := cs / format.TableEntrySize
	nt := p.nt
	table := make([]format.HostOff, nt*perTable)
	ranges := slices.Sorted(maps.Keys(p.blocks))
	for _, r := range ranges {
		table[r] = g.HostClusterOff(p.blocks[r])
	}
	nb := uint64(len(ranges))
	blk := make([]byte, cs)
	for _, r := range ranges {
		clear(blk)
		base := r << g.RefblockBits
		for i := uint64(0); i < g.RefblockEntries && base+i < uint64(len(counts)); i++ {
			format.SetRefcount(blk, g.RefcountOrder, i, uint64(counts[base+i]))
		}
		if err := im.writeMeta(alignedCopy(blk, im.memAlign), table[r]); err != nil {
			return amendStep(check, "Failed to write refblock", err)
		}
	}
	tb := make([]byte, nt*cs)
	for i, v := range table {
		format.PutReftable(tb, uint64(i), v)
	}
	tableOff := g.HostClusterOff(p.tableAt)
	if err := im.writeMeta(alignedCopy(tb, im.memAlign), tableOff); err != nil {
		return amendStep(check, "Failed to write the new reftable", err)
	}
	if err := im.dev.Flush(); err != nil {
		return amendStep(check, "Failed to flush the refblock cache", err)
	}
	im.event(EvRebuild)
	// The same header write clears the dirty bit: the new refcounts are
	// exact (Q8), and a later lazy update sets it again (dirtySet).
	oldOff, oldClusters, oldInc, oldOrder := im.hdr.RefcountTableOffset, im.hdr.RefcountTableClusters, im.hdr.IncompatibleFeatures, im.hdr.RefcountOrder
	im.hdr.RefcountTableOffset, im.hdr.RefcountTableClusters, im.hdr.RefcountOrder = tableOff, uint32(nt), order
	// A Check's rebuild keeps a dirty bit it found: the caller clears
	// it once the Check leaves no corruption (repairDirty,
	// markCleanAfterCheck); a repair that leaves one keeps the bit.
	keepDirty := check && oldInc&format.IncompatDirty != 0
	if !keepDirty {
		im.hdr.IncompatibleFeatures &^= format.IncompatDirty
	}
	// And, after a Check, the bitmaps' consistency bit: their clusters
	// may not have been counted. A damaged image, read-only until now,
	// never had it cleared. But while the bit is set the Check counted
	// the bitmaps' clusters from their directory (it refuses a rebuild
	// when it cannot parse the directory or a table; a damaged table
	// entry it reports), so they are kept, as qemu-img's rebuild keeps
	// them: bitmaps this open maintains (loaded, Q22) go on recording
	// writes, and Close frees their old clusters in the new structures
	// as in the old; an open about to load them (bitmapsOpening: the
	// repair of a dirty image) keeps them through dropAutoclear anyway;
	// others (nothing loaded them: an open for repair, a damaged image)
	// are kept and guest writes, which would make them stale, are
	// refused until a reopen (bitmapsKept).
	oldAuto, oldKept := im.hdr.AutoclearFeatures, im.bitmapsKept
	if check {
		keep := oldAuto&format.AutoclearBitmaps != 0 && im.bitmapsExt() != nil
		if keep && im.bitmaps.Load() == nil && !im.bitmapsOpening {
			im.bitmapsKept = true
			im.syncState()
		}
		im.dropAutoclearKeeping(keep && im.bitmaps.Load() != nil)
	}
	err = im.writeHeader()
	if err == nil {
		err = im.dev.Flush()
	}
	if err != nil {
		// The header on the device may name either structure (Q4).
		im.hdr.RefcountTableOffset, im.hdr.RefcountTableClusters, im.hdr.IncompatibleFeatures = oldOff, oldClusters, oldInc
		im.hdr.RefcountOrder = oldOrder
		im.hdr.AutoclearFeatures, im.bitmapsKept = oldAuto, oldKept
		im.syncState()
		im.loseWritesLocked(err)
		return amendStep(check, "Failed to update the qcow2 header", err)
	}
	if keepDirty {
		im.dirtySet = true // on disk still; dirtyKept as it was
	} else {
		im.dirtySet, im.dirtyKept = false, false
	}
	// Memory follows the header: the old blocks are gone from the cache
	// and lose their role (one that was really data is data again).
	for _, b := range oldBlocks {
		im.rbc.Discard(int64(b))
		if im.meta.get(g.HostCluster(b)) == metaRefblock {
			im.meta.del(g.HostCluster(b))
		}
	}
	// The refcount fields of the geometry, which only code under mu
	// reads (the cluster fields stay).
	og.RefcountOrder, og.RefcountBits, og.RefblockBits = ng.RefcountOrder, ng.RefcountBits, ng.RefblockBits
	og.RefblockEntries, og.RefcountMax = ng.RefblockEntries, ng.RefcountMax
	for _, off := range table {
		if off != 0 {
			im.meta.set(g.HostCluster(off), metaRefblock)
		}
	}
	im.reftable = table
	im.rtOff.Store(uint64(tableOff))
	im.rtLen.Store(nt * cs)
	im.freeIdx = 0
	// A cluster compFree points into may be free in the new counts
	// (only a leaked reference kept it): no stream appends there (Q13).
	im.compFree = 0
	im.c.refblocksAllocated.Add(int64(nb))
	// As QEMU, whose leak repair after its rebuild frees the old
	// structures with QCOW2_DISCARD_ALWAYS: their space goes back to
	// the file system, but for clusters something else references too.
	// The header no longer names them, durably.
	var old []fix
	freed := func(off format.HostOff, size uint64) {
		for k := g.HostCluster(off); k <= g.HostCluster(off+format.HostOff(size)-1) && k < n; k++ {
			if counts[k] == 0 {
				old = append(old, fix{k, 0})
			}
		}
	}
	freed(oldOff, uint64(oldClusters)*cs)
	for _, b := range oldBlocks {
		freed(b, cs)
	}
	if fsize, err := im.dev.Size(); err == nil {
		im.punchLeaked(old, uint64(fsize))
	}
	return nil
}

// rebuildPlace is where the rebuilt structures go.
type rebuildPlace struct {
	blocks      map[uint64]uint64 // refcount block cluster by table index
	tableAt, nt uint64            // the table's first cluster and length
	taken       []uint64          // every cluster they take (counted 1)
}

// placeRebuild says where the rebuilt structures go: from cluster a, one
// refcount block for each range in ranges (ascending), then nt clusters
// of table, which covers every range. counts holds the new counts of the
// clusters below len(counts). In a file they go past everything: the
// file grows a little (SetRefcountBits). A device of fixed size cannot
// grow: they go in the first run of clusters that nothing references and
// no old structure occupies (a crash before the header switch finds the
// old ones intact).
func (im *Image) placeRebuild(g *format.Geometry, counts []uint32, oldBlocks []format.HostOff) (rebuildPlace, error) {
	a, nb, nt, ranges, err := im.placeRebuildPast(g, counts, oldBlocks)
	if err != nil {
		return rebuildPlace{}, err
	}
	p := rebuildPlace{blocks: map[uint64]uint64{}, tableAt: a + nb, nt: nt}
	for i, r := range ranges {
		p.blocks[r] = a + uint64(i)
	}
	for k := a; k < a+nb+nt; k++ {
		p.taken = append(p.taken, k)
	}
	return p, nil
}

// placeRebuildLikeQemu places the structures a Check rebuilds in a file
// as QEMU 7.2's rebuild_refcount_structure does, so that the file ends
// where qemu-img's repair leaves it: each range's refcount block in the
// first free cluster at or past the range's start
// (rebuild_refcounts_write_refblocks, alloc_clusters_imrt), then the
// table in the first free run from cluster 0, and again while the table
// grows (a table abandoned so stays counted, a leak the repair after the
// switch frees, as QEMU's). Free is what counts calls free (nothing
// references it; the old table and blocks it counts are in use), past the
// end of the file too, and none of the old structures' clusters, held
// ones (Q12) or damaged blocks' (QEMU's overlap check refuses to write
// there and its repair fails): the header names the old structures until
// the switch, and nothing else is written over.
func (im *Image) placeRebuildLikeQemu(g *format.Geometry, counts []uint32, oldBlocks []format.HostOff) (rebuildPlace, error) {
	cs := g.ClusterSize
	n := uint64(len(counts))
	avoid := im.oldRefcountClusters(g, oldBlocks)
	taken := map[uint64]bool{}
	used := func(k uint64) bool { return (k < n && counts[k] != 0) || taken[k] }
	free := func(k uint64) bool {
		return !used(k) && !avoid[k] && (len(im.held) == 0 || !im.isHeld(k))
	}
	p := rebuildPlace{blocks: map[uint64]uint64{}}
	// alloc: count free clusters in a row from *ffc (alloc_clusters_imrt),
	// past the end of the file if need be. QEMU takes the clusters past
	// its table's end unseen; here they are free too unless taken, held
	// or an old structure's (a refcount block past the end of the file,
	// which is not written over).
	alloc := func(count uint64, ffc *uint64) uint64 {
		k, run, firstGap := *ffc, uint64(0), true
		for ; run < count; k++ {
			if free(k) {
				run++
				if firstGap {
					*ffc, firstGap = k, false
				}
			} else {
				run = 0
			}
		}
		k -= run
		for i := k; i < k+count; i++ {
			taken[i] = true
			p.taken = append(p.taken, i)
		}
		return k
	}
	entries := uint64(0) // the table's, a whole number of clusters
	perTable := cs / format.TableEntrySize
	writeBlocks := func(first, end uint64) (grown bool) {
		ffc := uint64(0)
		for k := first; k < end; k++ {
			if !used(k) {
				continue
			}
			r := k >> g.RefblockBits
			start := r << g.RefblockBits
			if _, ok := p.blocks[r]; !ok {
				ffc = max(ffc, start) // not in a block written already
				b := alloc(1, &ffc)
				end = max(end, b+1) // its own count is written too
				if entries <= r {
					entries = (r + perTable) / perTable * perTable
					grown = true
				}
				p.blocks[r] = b
			}
			k = start + g.RefblockEntries - 1
		}
		return grown
	}
	writeBlocks(0, n)
	for iter := 0; ; iter++ {
		if iter > 100 {
			return rebuildPlace{}, fmt.Errorf("qcow2: refcount structure rebuild did not converge")
		}
		p.nt = entries / perTable
		if p.nt*cs > format.MaxReftableSize {
			return rebuildPlace{}, fmt.Errorf("%w: refcount table would exceed %d bytes", ErrUnsupported, format.MaxReftableSize)
		}
		ffc := uint64(0)
		p.tableAt = alloc(p.nt, &ffc)
		if !writeBlocks(p.tableAt, p.tableAt+p.nt) {
			break
		}
	}
	return p, nil
}

// oldRefcountClusters are the clusters of the old refcount structures,
// which a rebuild never writes before the header switch (Q4): the
// table's, the blocks' and those a damaged (unaligned) entry's block
// lies over, both of them (QEMU's overlap check covers both).
func (im *Image) oldRefcountClusters(g *format.Geometry, oldBlocks []format.HostOff) map[uint64]bool {
	cs := g.ClusterSize
	avoid := map[uint64]bool{}
	rt := im.hdr.RefcountTableOffset
	for k := g.HostCluster(rt); k < g.HostCluster(rt+format.HostOff(uint64(im.hdr.RefcountTableClusters)*cs)); k++ {
		avoid[k] = true
	}
	for _, b := range oldBlocks {
		avoid[g.HostCluster(b)] = true
	}
	for _, b := range im.damage.badRefblocks {
		avoid[g.HostCluster(b)] = true
		avoid[g.HostCluster(b+format.HostOff(cs-1))] = true
	}
	return avoid
}

// placeRebuildPast is placeRebuild's search.
func (im *Image) placeRebuildPast(g *format.Geometry, counts []uint32, oldBlocks []format.HostOff) (a, nb, nt uint64, ranges []uint64, err error) {
	cs := g.ClusterSize
	n := uint64(len(counts))
	perTable := cs / format.TableEntrySize
	used := map[uint64]bool{} // ranges with a nonzero count
	for k, v := range counts {
		if v != 0 {
			r, _ := g.RefIndex(uint64(k))
			used[r] = true
		}
	}
	find := func(size uint64) (uint64, bool) { return n, true }
	if im.dcap.Fixed {
		avoid := im.oldRefcountClusters(g, oldBlocks)
		dsize, err := im.dev.Size()
		if err != nil {
			return 0, 0, 0, nil, err
		}
		limit := min(n, uint64(dsize)/cs) // whole clusters inside the device
		find = func(size uint64) (uint64, bool) {
			run := uint64(0)
			for k := uint64(0); k < limit; k++ {
				if counts[k] != 0 || avoid[k] || (len(im.held) != 0 && im.isHeld(k)) { // held: Q12
					run = 0
					continue
				}
				if run++; run == size {
					return k + 1 - size, true
				}
			}
			return 0, false
		}
	}
	nb, nt = uint64(len(used)), 1
	for iter := 0; ; iter++ {
		if iter > 100 {
			return 0, 0, 0, nil, fmt.Errorf("qcow2: refcount structure rebuild did not converge")
		}
		var ok bool
		if a, ok = find(nb + nt); !ok {
			return 0, 0, 0, nil, fmt.Errorf("qcow2: no run of %d free clusters for the rebuilt refcount structures on a device of fixed size", nb+nt)
		}
		set := maps.Clone(used)
		for k := a; k < a+nb+nt; k++ {
			r, _ := g.RefIndex(k)
			set[r] = true
		}
		ranges = slices.Sorted(maps.Keys(set))
		k, t := uint64(len(ranges)), (ranges[len(ranges)-1]+1+perTable-1)/perTable
		if k == nb && t == nt {
			break
		}
		nb, nt = k, t
	}
	if nt*cs > format.MaxReftableSize {
		return 0, 0, 0, nil, fmt.Errorf("%w: refcount table would exceed %d bytes", ErrUnsupported, format.MaxReftableSize)
	}
	return a, nb, nt, ranges, nil
}

// cureDamageLocked forgets damage the open let by that lay in the
// refcount structures only (Q19), now that they are rebuilt: the open's
// overlap checks run again, strictly, with the new structures, and pass,
// and the image is writable again if it was opened so.
func (im *Image) cureDamageLocked() error {
	d := &im.damage
	if !d.damaged() || d.fatal {
		return nil
	}
	im.meta.reset()
	if err := im.overlapCheckStatic(func(err error, _ bool) error { return err }); err != nil {
		im.damage.noteRefcounts(err, false)
		return err
	}
	// Field by field: lock-free lookups read l1Unaligned (false here: L1
	// damage is fatal).
	d.first, d.msgs, d.badRefblocks, d.reservedRefblocks, d.reftableMsgs, d.noReftable, d.count = nil, nil, nil, nil, nil, false, 0
	im.ro = im.opts.ReadOnly
	im.syncState()
	return nil
}

// maxRefcount is the largest refcount 2^order-bit entries hold.
func maxRefcount(order uint32) uint64 {
	if order >= 6 {
		return ^uint64(0)
	}
	return 1<<(uint64(1)<<order) - 1
}

// amendStep is err, for a change of the refcount width (not a Check's
// rebuild), as the StepError QEMU's qcow2_change_refcount_order names
// the step with ("Failed to write refblock: No space left on device").
func amendStep(check bool, step string, err error) error {
	if check {
		return err
	}
	return &StepError{Step: step, Err: err}
}
