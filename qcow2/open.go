package qcow2

import (
	"fmt"
	"math"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Open opens the image at path with o.Opener (default DefaultOpener).
func Open(path string, o Options) (*Image, error) {
	op := o.Opener
	if op == nil {
		op = DefaultOpener
	}
	dev, err := op(path, o.ReadOnly)
	if err != nil {
		return nil, err
	}
	im, err := open(dev, path, o)
	if err != nil {
		dev.Close()
		return nil, err
	}
	im.ownDev = true
	return im, nil
}

// OpenDevice opens an image stored on dev. Relative backing file names are
// resolved against the directory of o.Path, or without it against the
// working directory. The Image does not close dev.
func OpenDevice(dev block.Device, o Options) (*Image, error) {
	return open(dev, o.Path, o)
}

// open opens the image on dev: each step below does one job, in the
// order that decides which error a damaged image reports.
func open(dev block.Device, path string, o Options) (*Image, error) {
	im := newImage(dev, path, o)
	if err := im.checkNotAbove(); err != nil {
		return nil, err
	}
	if err := lockDevice(dev, path, FormatQcow2, o); err != nil {
		return nil, err
	}
	if err := im.choosePrealloc(); err != nil {
		return nil, err
	}
	fsize, err := dev.Size()
	if err != nil {
		return nil, err
	}
	if err := im.readHeader(fsize); err != nil {
		return nil, err
	}
	if err := im.checkFeatures(); err != nil {
		return nil, err
	}
	// Tables must lie inside the file (a cluster of slack for the last;
	// the file's length counted in whole 512-byte sectors, as QEMU's
	// bdrv_getlength counts it).
	lim := &fileLimit{size: fsize, end: (uint64(fsize)+511)&^511 + im.g.ClusterSize, lenient: o.ReadOnly || o.Repair,
		tablesPastEOF: o.ReadOnly && !o.Repair}
	if err := im.checkTablesInFile(lim); err != nil {
		return nil, err
	}
	if err := im.openCrypt(lim); err != nil { // before anything is written
		return nil, err
	}
	if err := im.loadReftable(lim); err != nil {
		return nil, err
	}
	if err := im.loadL1(lim); err != nil {
		return nil, err
	}
	im.warnStaleBitmaps() // where QEMU reads the header extensions
	// The snapshot table and the snapshots' L1 tables first: the overlap
	// checks cover them too.
	if err := im.loadSnapshots(lim); err != nil {
		return nil, err
	}
	err = im.overlapCheckStatic(func(err error, refcounts bool) error {
		if !lim.lenient {
			return err
		}
		im.damage.noteRefcounts(err, refcounts) // Check sees it in the refcounts
		return nil
	})
	if err != nil {
		return nil, err
	}
	if im.damage.damaged() {
		im.ro = true // even when opened for repair (Q19)
	}
	im.initSpace(max(uint64(fsize), lim.used))
	if fc := im.g.HostCluster(format.HostOff(fsize) + format.HostOff(im.g.ClusterSize) - 1); lim.used > uint64(fc)<<im.g.ClusterBits {
		im.space.slackLo, im.space.slackHi = fc, im.g.HostCluster(im.space.mark())
	}
	im.vsize.Store(im.hdr.Size)
	im.hsize.Store(im.hdr.Size)
	im.ver.Store(im.hdr.Version)
	im.ctype.Store(uint32(im.hdr.CompressionType))
	im.syncState()
	if err := im.initCaches(); err != nil {
		return nil, err
	}
	if err := im.openDataFile(); err != nil {
		im.closeCaches()
		return nil, err
	}
	if err := im.openBacking(); err != nil {
		im.closeCaches()
		im.closeDataFile()
		return nil, err
	}
	if !im.ro {
		if err := im.openWritable(); err != nil {
			im.closeCaches()
			im.closeBacking()
			im.closeDataFile()
			return nil, err
		}
	}
	return im, nil
}

// newImage is an Image for dev with the alignments its device needs.
func newImage(dev block.Device, path string, o Options) *Image {
	im := &Image{dev: dev, path: path, opts: o, ro: o.ReadOnly, dcap: dev.Caps()}
	im.metaAlign = im.dcap.Align
	if im.metaAlign < 8 {
		im.metaAlign = 8
	}
	im.memAlign = im.dcap.MemAlign
	if im.memAlign < block.DefaultMemAlign {
		im.memAlign = block.DefaultMemAlign
	}
	return im
}

// choosePrealloc picks the preallocation strategy from the options and
// the device: prealloc on or off, the reserve ahead and its alignment,
// and the fill mode (PreallocInfo). A device of fixed size (a block
// device) gets no reserve: its whole size lies below the high-water mark
// from the open on, so nothing could ever be reserved or filled.
func (im *Image) choosePrealloc() error {
	o := &im.opts
	switch o.Prealloc {
	case "", "on", "off":
	default:
		return fmt.Errorf("qcow2: prealloc %q (on, off)", o.Prealloc)
	}
	if o.PreallocAlign < 0 || o.PreallocAlign%512 != 0 {
		// QEMU's preallocate filter's words.
		return fmt.Errorf("qcow2: prealloc-align parameter of preallocate filter is not aligned to 512 (%d)", o.PreallocAlign)
	}
	im.prealloc = o.Prealloc != "off"
	if im.prealloc && !o.ReadOnly && o.PreallocSize >= 0 && im.dcap.ZeroFlags&block.Allocate != 0 && !im.dcap.Fixed {
		im.space.ahead, im.space.align = o.PreallocSize, o.PreallocAlign
		if im.space.ahead == 0 {
			im.space.ahead = DefaultPreallocSize
		}
		if im.space.align <= 0 {
			im.space.align = DefaultPreallocAlign
		}
	}
	fillMode, fillWhy, err := resolveFill(o.PreallocFill, im.dcap)
	if err != nil {
		return err
	}
	im.pinfo = PreallocInfo{On: im.prealloc, Ahead: im.space.ahead, AheadAlign: im.space.align}
	if im.space.ahead > 0 {
		im.pinfo.Fill, im.pinfo.FillReason = fillMode, fillWhy
	}
	return nil
}

// readHeader reads and parses the header, and derives the geometry.
// Cluster 0 holds the header, extensions and backing name; it reads the
// largest possible cluster (or the file) and lets the parser check.
func (im *Image) readHeader(fsize int64) error {
	hb := block.AlignedBuf(int(min(max(fsize, 512), 1<<format.MaxClusterBits)+511)&^511, im.memAlign)
	if err := block.ReadAt(im.dev, hb, 0); err != nil {
		return fmt.Errorf("qcow2: reading header: %w", err)
	}
	hb = hb[:min(int64(len(hb)), max(fsize, 0))]
	parse := format.ParseHeader
	if im.opts.Check {
		parse = format.ParseHeaderForCheck
	}
	h, err := parse(hb)
	if err != nil {
		return err
	}
	// A size that is no multiple of 512 (a foreign or damaged header)
	// is taken in whole sectors, as QEMU takes it (total_sectors): the
	// disk ends there, and a header written later says so.
	h.Size &^= 511
	im.hdr = h
	im.hdrDisk = append([]byte(nil), hb[:min(uint64(len(hb)), format.HeaderUsedEnd(h))]...)
	im.g = format.NewGeometry(h.ClusterBits, h.RefcountOrder, h.ExtendedL2())
	return nil
}

// checkFeatures refuses what the engine does not implement, opens an
// image marked corrupt read-only (Q9) and notes lazy refcounts.
func (im *Image) checkFeatures() error {
	h := im.hdr
	if h.IncompatibleFeatures&format.IncompatCorrupt != 0 && !im.opts.Repair {
		if im.opts.RefuseCorrupt && !im.opts.ReadOnly {
			return ErrMarkedCorrupt // as QEMU
		}
		im.ro = true // QEMU refuses r/w; we open read-only (Q9)
	}
	im.lazy = h.CompatibleFeatures&format.CompatLazyRefcounts != 0
	return nil
}

// fileLimit bounds the tables an image may point at: the file's size,
// and the end of the file plus a cluster of slack for the last table.
//
// A table entry (an L2 table or a refcount block) past the limit is fatal
// for a writable open; a read-only or repairing open tolerates it, as
// QEMU's does, so that info, map, reads (zeros there) and Check work on
// the damaged image, and Check reports it.
type fileLimit struct {
	size    int64
	end     uint64
	lenient bool
	// tablesPastEOF lets the refcount and L1 tables run past the limit
	// (pastTable).
	tablesPastEOF bool
	damage        error // the first entry past the limit a lenient open let by
	// used is the end of the furthest table let by that the engine may
	// write in place (the L1 and refcount tables, L2 tables, refcount
	// blocks, the LUKS header): one in the slack past the end of the
	// file lies past the high-water mark the file size gives, so the
	// mark starts past it (initSpace; SP2: else, once freed, its cluster
	// would be judged fresh though the engine wrote the table there).
	used uint64
}

// note records a table of n bytes at off that the open let by.
func (l *fileLimit) note(off, n uint64) { l.used = max(l.used, off+n) }

// past reports an entry past the limit: nil (recorded) when lenient.
func (l *fileLimit) past(err error) error {
	if !l.lenient {
		return err
	}
	if l.damage == nil {
		l.damage = err
	}
	return nil
}

// pastTable is past for the refcount or L1 table itself, let by only
// when tablesPastEOF is set (a read-only open that repairs nothing: the
// part past the end reads as zeros, as in QEMU, and Check reports it).
func (l *fileLimit) pastTable(err error) error {
	if err == nil || !l.tablesPastEOF {
		return err
	}
	return l.past(err)
}

// check reports a table of n bytes at off that runs past the limit.
func (l *fileLimit) check(field string, off, n uint64) error {
	if off > l.end || n > l.end || off+n > l.end {
		return corruptf(field, off, "table of %d bytes runs past the end of the file (%d bytes)", n, l.size)
	}
	l.note(off, n)
	return nil
}

// checkTablesInFile checks that the refcount and L1 tables lie inside
// the file before either is read.
func (im *Image) checkTablesInFile(lim *fileLimit) error {
	h := im.hdr
	if h.RefcountTableClusters == 0 {
		// No refcount table (an open for check): its offset names
		// nothing.
		return lim.pastTable(lim.check("l1_table_offset", uint64(h.L1TableOffset), uint64(h.L1Size)*8))
	}
	if err := lim.check("refcount_table_offset", uint64(h.RefcountTableOffset), uint64(h.RefcountTableClusters)*im.g.ClusterSize); err != nil {
		return lim.pastTable(err)
	}
	return lim.pastTable(lim.check("l1_table_offset", uint64(h.L1TableOffset), uint64(h.L1Size)*8))
}

// loadReftable reads the refcount table and validates its entries.
func (im *Image) loadReftable(lim *fileLimit) error {
	h, g := im.hdr, &im.g
	rt := make([]byte, uint64(h.RefcountTableClusters)*g.ClusterSize)
	if err := block.ReadAt(im.dev, rt, int64(h.RefcountTableOffset)); err != nil {
		return fmt.Errorf("qcow2: reading refcount table: %w", err)
	}
	im.reftable = make([]format.HostOff, uint64(len(rt))/format.TableEntrySize)
	for i := range im.reftable {
		v := format.ReftableAt(rt, uint64(i))
		if err := format.ValidateReftableEntry(g, v); err != nil {
			if !lim.lenient {
				return err
			}
			v = im.lenientReftableEntry(uint64(i), v, err)
		}
		if v != 0 && uint64(v) >= lim.end {
			if err := lim.past(corruptf("refcount_table_entry", uint64(v), "refcount block %d past the end of the file", i)); err != nil {
				return err
			}
		} else if v != 0 {
			lim.note(uint64(v), g.ClusterSize)
		}
		im.reftable[i] = v
	}
	if h.RefcountTableClusters == 0 {
		// Only an open for check gets here (ParseHeaderForCheck): every
		// cluster in use counts 0, which a rebuild cures (Q19).
		im.damage.noteRefcounts(corruptf("refcount_table_clusters", 0, "the image has no refcount table"), true)
		im.damage.noReftable = true
	}
	im.rtOff.Store(uint64(h.RefcountTableOffset))
	im.rtLen.Store(uint64(h.RefcountTableClusters) * g.ClusterSize)
	return nil
}

// loadL1 reads the active L1 table, validates its entries and installs
// it.
func (im *Image) loadL1(lim *fileLimit) error {
	h, g := im.hdr, &im.g
	l1b := make([]byte, uint64(h.L1Size)*format.TableEntrySize)
	if err := block.ReadAt(im.dev, l1b, int64(h.L1TableOffset)); err != nil {
		return fmt.Errorf("qcow2: reading L1 table: %w", err)
	}
	l1 := newL1Table(uint64(h.L1Size))
	for i := range l1.size() {
		e := format.L1At(l1b, i)
		if err := e.Validate(g); err != nil {
			if !lim.lenient {
				return err
			}
			im.lenientL1Entry(e, err)
		}
		if off := e.Offset(); off != 0 && uint64(off) >= lim.end {
			if err := lim.past(corruptf("l1_entry", uint64(e), "L2 table %d past the end of the file", i)); err != nil {
				return err
			}
		} else if off != 0 {
			lim.note(uint64(off), g.ClusterSize)
		}
		l1.store(i, e)
	}
	im.setL1(l1, h.L1TableOffset)
	return nil
}

// ReadSnapshotTable reads the bytes of a snapshot table of n entries at
// off in dev, a file of fsize bytes, for format.ParseSnapshots: a guess
// of its length first, read again as far as its entries say (a long
// name), up to QEMU's cap (format.MaxSnapshotTableBytes) and the file's
// end.
func ReadSnapshotTable(dev block.Device, off format.HostOff, n uint32, fsize int64) ([]byte, error) {
	fs := uint64(max(fsize, 0))
	limit := min(fs-min(fs, uint64(off)), format.MaxSnapshotTableBytes)
	size := min(uint64(n)*1200, limit)
	for {
		b := make([]byte, size)
		if err := block.ReadAt(dev, b, int64(off)); err != nil {
			return nil, err
		}
		need, complete := format.SnapshotTableNeed(b, n)
		if complete || size >= limit {
			return b, nil
		}
		size = min(max(need, 2*size), limit)
	}
}

// SnapshotTableEnd is as far as a snapshot table at off can reach
// (format.MaxSnapshotTableBytes): the file size to give ReadSnapshotTable
// where, as in QEMU, the part of the table past the end of the file
// reads as zeros.
func SnapshotTableEnd(off format.HostOff) int64 {
	return int64(min(uint64(off)+format.MaxSnapshotTableBytes, math.MaxInt64))
}

// loadSnapshots parses the snapshot table, for Check and so that writes
// never corrupt the snapshots.
func (im *Image) loadSnapshots(lim *fileLimit) error {
	h := im.hdr
	if h.NbSnapshots == 0 {
		return nil
	}
	if err := lim.pastTable(lim.check("snapshots_offset", uint64(h.SnapshotsOffset), 0)); err != nil {
		return err
	}
	size := lim.size
	if lim.tablesPastEOF {
		// As QEMU: the part past the end of the file reads as zeros
		// (entries of zeros, which Check reports).
		size = max(SnapshotTableEnd(h.SnapshotsOffset), lim.size)
	}
	sb, err := ReadSnapshotTable(im.dev, h.SnapshotsOffset, h.NbSnapshots, size)
	if err != nil {
		return err
	}
	snaps, tlen, err := format.ParseSnapshots(sb, h.NbSnapshots)
	if err != nil {
		if !lim.lenient {
			return err
		}
		im.damage.note(err, fmt.Sprintf("ERROR snapshot table: %v", err))
		return nil
	}
	all := append([]format.Snapshot(nil), snaps...)
	kept := snaps[:0]
	for _, s := range snaps {
		if err := s.CheckL1(&im.g); err != nil {
			if !lim.lenient {
				return err
			}
			// QEMU's check's words; the entry is left out, as its check
			// leaves it (nothing reads its table).
			msg := fmt.Sprintf("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted",
				s.ID, s.Name, uint64(s.L1TableOffset))
			if im.g.Aligned(s.L1TableOffset) {
				msg = fmt.Sprintf("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted",
					s.ID, s.Name, s.L1Size)
			}
			im.damage.note(err, msg)
			continue
		}
		kept = append(kept, s)
	}
	im.snapshots = kept
	if len(kept) < len(all) {
		im.snapTable = all
	}
	im.snapOff.Store(uint64(h.SnapshotsOffset))
	im.snapLen.Store(tlen)
	return nil
}

// openWritable applies the writable-open rules: clear unknown autoclear
// bits, and rebuild refcounts of a dirty image before the first write.
func (im *Image) openWritable() error {
	if im.opts.Repair {
		if err := im.qemuBitmapsRefusal(); err != nil {
			return err
		}
	}
	if err := im.bitmapsMaintainable(); err != nil {
		return err
	}
	// The bitmaps' autoclear bit stays through the repair of a dirty
	// image too: its Check counts their clusters, and fails the open
	// if it cannot (QEMU's open repairs it the same way and keeps them).
	im.bitmapsOpening = !im.opts.Repair && !im.opts.NoBitmaps
	err := im.clearAutoclear()
	if err == nil {
		err = im.repairDirty()
	}
	im.bitmapsOpening = false
	if err != nil {
		return err
	}
	return im.loadBitmaps()
}

// clearAutoclear drops the autoclear bits of features we do not maintain
// and rewrites the header if any was set. An open for repair keeps valid
// bitmaps (as qemu-img check -r does: Check counts their clusters) and
// refuses guest writes instead (bitmapsKept), which would make them
// stale.
func (im *Image) clearAutoclear() error {
	if im.opts.Repair && im.hdr.AutoclearFeatures&format.AutoclearBitmaps != 0 {
		im.bitmapsKept = true
		im.syncState()
	}
	// Stale bitmaps' extension goes, as QEMU's writable open drops it
	// (their clusters stay, leaked), durably before the first write.
	stale := im.dropStaleBitmapsExt()
	if !im.dropAutoclear() && !stale {
		return nil
	}
	if err := im.writeHeader(); err != nil {
		return err
	}
	if stale {
		return im.dev.Flush()
	}
	return nil
}

// dropAutoclear clears in the header the autoclear bits of features we
// do not maintain, and reports whether any was set. We do not maintain
// bitmaps: their consistency bit goes, so that QEMU does not trust them
// (QEMU does the same for unknown users), and then nothing counts their
// clusters (Check counts them only while the bit is set), unless they
// are kept (bitmapsKept).
func (im *Image) dropAutoclear() bool { return im.dropAutoclearKeeping(false) }

// dropAutoclearKeeping is dropAutoclear, keeping the bitmaps' bit (and
// the loaded bitmaps) too when loaded says so: a Check's rebuild of an
// image whose bitmaps this open maintains (rebuildRefcountsLocked).
func (im *Image) dropAutoclearKeeping(loaded bool) bool {
	h := im.hdr
	old := h.AutoclearFeatures
	drop := ^uint64(format.AutoclearKnown) | format.AutoclearBitmaps
	if im.bitmapsKept || im.bitmapsOpening || loaded {
		drop &^= format.AutoclearBitmaps
	}
	h.AutoclearFeatures &^= drop
	if h.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		im.bitmaps.Store(nil) // Q22: stale from here on
	}
	return h.AutoclearFeatures != old
}

// repairDirty rebuilds the refcounts of an image left dirty with lazy
// refcounts (Q8) and clears the dirty bit durably. A repair that leaves
// errors keeps the bit: the refcounts are still not to be trusted. The
// open then fails, unless it is for repair (the caller's Check reports).
func (im *Image) repairDirty() error {
	h := im.hdr
	if h.IncompatibleFeatures&format.IncompatDirty == 0 {
		return nil
	}
	if im.opts.Repair {
		// Opened for check -r (QEMU's BDRV_O_CHECK): the caller's Check
		// repairs and reports, in its mode (-r leaks refuses to fix a
		// cluster in use counted 0, as qemu-img's does). Until then
		// nothing is written: the refcounts are not to be trusted.
		im.dirtySet, im.dirtyKept, im.needRepair = true, true, true
		im.syncState()
		return nil
	}
	// Every line goes to the log as the check finds it, as QEMU's
	// repair prints them all (kept, they were cut at MaxMessages).
	log := im.opts.RepairLog
	if log == nil {
		log = func(string) {}
	}
	r, err := im.Check(CheckOptions{Repair: RepairAll, openRepair: true, Message: log})
	if err != nil {
		return fmt.Errorf("qcow2: repairing dirty image: %w", err)
	}
	if r.CheckErrors > 0 || r.Corruptions > 0 {
		im.dirtySet, im.dirtyKept = true, true // the bit stays, as it is on disk
		if im.opts.Repair {
			return nil
		}
		return fmt.Errorf("%w: the image is dirty and its refcounts could not be repaired (%d corruptions, %d check errors): run check -r all, or open it read-only",
			ErrCorrupt, r.Corruptions, r.CheckErrors)
	}
	h.IncompatibleFeatures &^= format.IncompatDirty
	if err := im.writeHeader(); err != nil {
		return err
	}
	if err := im.dev.Flush(); err != nil {
		return err
	}
	im.dirtySet, im.dirtyKept = false, false // the next lazy update sets it again
	return nil
}
