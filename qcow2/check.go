package qcow2

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"syscall"

	"github.com/qring/qring/block"

	"github.com/qring/qring/qcow2/format"
)

// RepairMode selects what Check fixes (qemu-img check -r).
type RepairMode int

const (
	RepairNone  RepairMode = iota
	RepairLeaks            // -r leaks
	RepairAll              // -r all: leaks, refcounts too low, COPIED flags
)

// CheckOptions configure Check.
type CheckOptions struct {
	Repair RepairMode
	// MaxMessages caps the detail lines kept (default 1000).
	MaxMessages int
	// Message, when set, receives every detail line as the check finds
	// it, in order (qemu-img check prints them so: all of them, in
	// constant memory); CheckResult.Messages then stays empty and
	// MaxMessages does not apply.
	Message func(line string)
	rebuilt bool // the refcount structures were just rebuilt: never again
	// live: the engine's own check at a flush (invariants): a table the
	// open found in the slack past the end of the file is the input's
	// (accepted by the writable open, written back there), not a
	// corruption the engine made.
	live bool
	// openRepair: the repair of a dirty image at its writable open
	// (repairDirty). A table that open let by in the slack past the end
	// of the file (a cluster at most past it, reading as zeros) is the
	// engine's: it writes it back there and the file grows over it. It
	// is counted as inside the file, so that its cluster's refcount is
	// repaired (a lazy refcount may have left it 0, and the allocator
	// would hand it out again), where QEMU's automatic repair reports
	// it past the end of the file and opens anyway, its count unchecked.
	openRepair bool
	// Report, when set, receives the lines qemu-img prints as error
	// reports, with its program name before them ("qemu-img: Could not
	// resize file: File too large"), without it; nil: they go to
	// Message (or Messages) as the detail lines.
	Report func(line string)
}

// CheckResult is qemu-img check's ImageCheck.
type CheckResult struct {
	CheckErrors        int // could not complete (I/O errors)
	Corruptions        int
	Leaks              int
	CorruptionsFixed   int
	LeaksFixed         int
	ImageEndOffset     int64
	TotalClusters      int64
	AllocatedClusters  int64
	FragmentedClusters int64
	CompressedClusters int64
	// Messages are the detail lines qemu-img prints on stderr
	// ("Leaked cluster 5 refcount=1 reference=0", "ERROR ...").
	Messages []string
	// Err is the first I/O error that kept part of the check (or of its
	// repair) from running; CheckErrors counts it with the others.
	Err error
}

// Clean reports no corruption and no leaks.
func (r *CheckResult) Clean() bool { return r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 }

type checker struct {
	im    *Image
	r     *CheckResult
	max   int
	out   func(string) // CheckOptions.Message
	ref   []uint32     // computed references per host cluster (past the width too)
	fsize uint64
	// [slackLo, slackHi): clusters inside ref that still lie past the
	// end of the file, where only a table the open found past it can be
	// (hostSpace.slackLo): references there are past the end of the
	// file, as for QEMU.
	slackLo, slackHi uint64
	// untrusted says why the stored refcounts cannot be repaired in
	// place: a region that runs from inside the file to a cluster or
	// more past its end (its clusters inside look leaked, and a leak
	// repair would free them while they are in use; a region wholly
	// past the end is only the corruption reported, its count skipped:
	// pastEOF), or a refcount block that something else also references
	// (fixes written through it would land in that data). QEMU rebuilds
	// the refcount structures then; Check refuses to repair.
	untrusted string
	// fatal says a reason in untrusted is one a rebuild of the refcount
	// structures would not cure (such a region, damaged tables): -r all
	// refuses too. Otherwise -r all rebuilds them (rebuild.go).
	fatal bool
	// unread: a table of references (an L2 table, a snapshot's L1
	// table, the bitmap directory or a bitmap table) could not be read, so the clusters it names look leaked or
	// less used than they are: nothing is repaired (QEMU's check stops
	// at the error).
	unread bool
	// pastEOF: clusters of a region that reaches a whole cluster or more
	// past the end of the file (inc), and past that end themselves: the
	// comparison skips them (QEMU's stops at the end of the file).
	pastEOF map[uint64]bool
	// openRepair: CheckOptions.openRepair.
	openRepair bool
	// noRebuild says why the refcount structures must not be rebuilt
	// though nothing else forbids repairs: something references a
	// region wholly past the end of the file, where a rebuild would
	// write the new structures (rebuild.go).
	noRebuild string
	// sharedBlocks are the refcount table entries whose block something
	// else references too ("ERROR refcount block N refcount=M"), by
	// index.
	sharedBlocks map[uint64]bool
	// refcountErrs counts the refcounts the comparison could not read
	// (an unaligned refcount block's): check errors a rebuild cures.
	refcountErrs int
	// signaled: QEMU's corruption event was reported (its
	// signaled_corruption; later ones are suppressed).
	signaled bool
}

// outside reports whether cluster k lies outside the n clusters of the
// image: past them, or in the slack past the end of the file (slackLo).
func (c *checker) outside(k, n uint64) bool {
	return k >= n || (k >= c.slackLo && k < c.slackHi)
}

// distrust records why repairs are refused, for good; the first reason
// stays.
func (c *checker) distrust(why string) {
	c.distrustRefcounts(why)
	c.fatal = true
}

// distrustRefcounts records why the stored refcounts cannot be repaired
// in place, where rebuilding them would (-r all).
func (c *checker) distrustRefcounts(why string) {
	if c.untrusted == "" {
		c.untrusted = why
	}
}

// ioError counts an I/O error that kept part of the check from running
// and keeps the first (CheckResult.Err).
func (c *checker) ioError(err error) {
	c.r.CheckErrors++
	if c.r.Err == nil {
		c.r.Err = err
	}
}

// refuseOverlap stops a repair that would write the inactive L2 table
// slice at off over other metadata (what), as QEMU's overlap check
// stops fix_l2_entry_by_zero: the image is marked corrupt, nothing is
// written, and the check fails (EIO) where it stands. Writing there
// zeroed refcounts of clusters in use, which later allocations took
// again: data lost.
func (c *checker) refuseOverlap(off format.HostOff, what string) error {
	name := what
	switch what {
	case "header":
		name = "qcow2_header"
	case "snapshot L1 table":
		name = "inactive L1 table"
	case "bitmap directory":
		name = "bitmap_directory"
	}
	c.msg("qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with %s); further corruption events will be suppressed", name)
	c.msg("ERROR: Overlap check failed")
	err := c.im.markCorrupt(corruptf("l2_table", uint64(off), "repairing a snapshot L2 table would overwrite the %s", what))
	return &CheckFailedError{Errno: syscall.EIO, Err: err}
}

// refblockUnaligned reports QEMU's corruption event for the unaligned
// refcount block b of reftable entry i, met first when the comparison
// asks for a refcount it holds (qcow2_get_refcount's
// qcow2_signal_corruption): fatal in an image open for a repair, which
// it marks corrupt (the check then fails, as qemu-img's: nothing more
// is repaired; Check clears the mark once a repair cured the image);
// rebuild: the refcount structures are rebuilt next, which writes them
// whatever the mark (as QEMU would, but for its overlap check, which
// stops its rebuild over such a block: qimg's writes go elsewhere).
func (c *checker) refblockUnaligned(b format.HostOff, i uint64, writable, rebuild bool) {
	if c.signaled {
		return
	}
	c.signaled = true
	idx := "0" // C's %#x
	if i != 0 {
		idx = fmt.Sprintf("%#x", i)
	}
	what := fmt.Sprintf("Refblock offset %#x unaligned (reftable index: %s)", uint64(b), idx)
	if !writable {
		c.msg("qcow2: Image is corrupt: %s; further non-fatal corruption events will be suppressed", what)
		return
	}
	c.msg("qcow2: Marking image as corrupt: %s; further corruption events will be suppressed", what)
	if rebuild {
		return
	}
	im := c.im
	im.markCorrupt(corruptf("refcount_table", i, "%s", what))
	// A damaged image is open read-only but for the repair (Q19), and
	// markCorrupt marks nothing then: the repair's open marks it, as
	// QEMU's.
	if im.ro && !im.opts.ReadOnly && im.hdr.Version >= 3 && im.hdr.IncompatibleFeatures&format.IncompatCorrupt == 0 {
		im.hdr.IncompatibleFeatures |= format.IncompatCorrupt
		if im.writeHeader() == nil {
			im.dev.Flush()
		}
	}
}

// qemuMaxLength is QEMU's BDRV_MAX_LENGTH, 2^63-2^30: its block layer
// refuses a request that reaches past it (-EIO, "offset(N) exceeds
// maximum(M)"), a read of a refcount block there too.
const qemuMaxLength = 1<<63 - 1<<30

// growLimit is how many clusters past its end a repair grows the file
// by, at most, to reach a refcount block outside it (growOver): each
// one is counted in memory (4 bytes), and the file is left that long.
const growLimit = 1 << 24

// growOver grows the file over the refcount block at b, past its end,
// as QEMU's check_refblocks does for -r all (bdrv_truncate to the
// block's end): the block then reads as zeros. It returns the image's
// clusters after, and whether it grew. A growth QEMU's block layer
// refuses (past qemuMaxLength), one of more than growLimit clusters
// (QEMU tries it: the file system refuses it, as ext4 past 16 TiB, or
// a file that long is left, and QEMU counts each of its clusters in
// memory), and a failed truncate print QEMU's words for its failure
// (report: the error line; "ERROR could not resize image") and grow
// nothing.
func (c *checker) growOver(b format.HostOff, report func(string)) (uint64, bool) {
	im := c.im
	cs := im.g.ClusterSize
	if report == nil {
		report = func(l string) { c.msg("%s", l) }
	}
	end := uint64(b) + cs
	n := uint64(len(c.ref))
	fail := func(en syscall.Errno) (uint64, bool) {
		c.msg("ERROR could not resize image: %s", strerror(en))
		return n, false
	}
	if end > qemuMaxLength {
		report(fmt.Sprintf("offset(%d) exceeds maximum(%d)", end, uint64(qemuMaxLength)))
		return fail(syscall.EIO)
	}
	if (end+cs-1)/cs > n+growLimit {
		report("Could not resize file: " + strerror(syscall.EFBIG))
		return fail(syscall.EFBIG)
	}
	if err := im.dev.Truncate(int64(end)); err != nil {
		en := syscall.EIO
		errors.As(err, &en)
		report("Could not resize file: " + strerror(en))
		return fail(en)
	}
	size, err := im.dev.Size()
	if err != nil || uint64(size) < end {
		return fail(syscall.EIO)
	}
	c.fsize = (uint64(size) + 511) &^ 511
	nn := max(n, (c.fsize+cs-1)/cs)
	c.ref = append(c.ref, make([]uint32, nn-n)...)
	return nn, true
}

// unreadable records that a table of references could not be read
// (why): an I/O error, and no repair from then on (unread).
func (c *checker) unreadable(err error, why string) {
	c.ioError(err)
	c.unread = true
	c.distrust(why)
}

func (c *checker) msg(f string, a ...any) {
	if c.out != nil {
		c.out(fmt.Sprintf(f, a...))
		return
	}
	if len(c.r.Messages) < c.max {
		c.r.Messages = append(c.r.Messages, fmt.Sprintf(f, a...))
	}
}

// inc counts one reference to every cluster of [off, off+n).
func (c *checker) inc(off format.HostOff, n uint64, what string) {
	g := &c.im.g
	if n == 0 {
		return
	}
	first := g.HostCluster(off)
	last := g.HostCluster(off + format.HostOff(n) - 1)
	// As QEMU: the last cluster may be cut short by the end of the file
	// (reads past it are zeros); only a region that reaches a whole
	// cluster or more past the end is an error, and then none of its
	// clusters is counted (those inside the file too: their stored
	// counts are leaks, as QEMU reports them).
	if uint64(off)+n-min(c.fsize, uint64(off)+n) >= g.ClusterSize {
		for k := first; k <= last; k++ {
			if !c.outside(k, uint64(len(c.ref))) {
				continue
			}
			c.msg("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x%x size 0x%x", off, n)
			c.r.Corruptions++
			why := "a " + what + " past the end of the file"
			switch {
			case k > first:
				// Its clusters inside the file look leaked though they
				// are in use: a leak repair would free them (QEMU's
				// does).
				c.distrust(why)
			default:
				// A region wholly past the end has no count to
				// repair; the leaks elsewhere are freed, as QEMU frees
				// them. A rebuild is not: it writes the new structures
				// past the end of the file, over the region (QEMU's
				// does). Nor is anything repaired by a dirty image's
				// repair at its open, which the corruption fails: a
				// failed open changes nothing.
				if c.noRebuild == "" {
					c.noRebuild = why
				}
				if c.openRepair {
					c.distrustRefcounts(why)
				}
			}
			// As QEMU, whose comparison stops at the end of the file:
			// their stored counts past it are neither leaks nor the
			// image's end.
			if c.pastEOF == nil {
				c.pastEOF = map[uint64]bool{}
			}
			for ; k <= last; k++ {
				c.pastEOF[k] = true
			}
			return
		}
	}
	for k := first; k <= last; k++ {
		if k >= uint64(len(c.ref)) {
			c.ref = append(c.ref, make([]uint32, k+1-uint64(len(c.ref)))...)
		}
		if uint64(c.ref[k]) >= g.RefcountMax {
			// As QEMU: one more reference than the refcount width holds
			// is a corruption (and no fix asks for more than the width
			// holds: compare). It is still counted: with 1-bit refcounts
			// a refcount block that is also data must show 2, or it
			// would pass for a refcount block only, fixes written
			// through it would land in the data, and a rebuild would
			// free the data cluster with the block.
			c.msg("ERROR: overflow cluster offset=0x%x", uint64(g.HostClusterOff(k)))
			c.msg("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
			c.r.Corruptions++
		}
		if c.ref[k] < ^uint32(0) {
			c.ref[k]++
		}
	}
}

// incEntry counts the clusters L2 entry e names (a data cluster, or the
// clusters a compressed one spans); why says whose entry it is.
func (c *checker) incEntry(e format.L2Entry, why string) {
	if c.im.df.ext {
		return // in the data file, not refcounted (DF3)
	}
	switch e.Type() {
	case format.ClusterNormal, format.ClusterZeroAlloc:
		c.inc(e.Offset(), c.im.g.ClusterSize, "data cluster "+why)
	case format.ClusterCompressed:
		d := e.DecodeCompressed(&c.im.g)
		c.inc(d.Off, d.Size, "compressed cluster "+why)
	}
}

// l2Fault is one fault of an L2 entry that Validate refuses: its
// detail line, and whether it is an unaligned preallocated cluster
// (one that holds no data), which -r all zeroes.
type l2Fault struct {
	line     string
	prealloc bool
}

// l2Faults are the faults of an L2 entry that Validate (version 3's
// rules) refuses, bitmap its subcluster bitmap with extended L2, one per
// fault, each a corruption: qemu-img check's words where it makes the
// same check (check_refcounts_l2), "" for none found (the caller words
// Validate's error).
func l2Faults(e format.L2Entry, bitmap uint64, g *format.Geometry) []l2Fault {
	if e.Compressed() {
		return []l2Fault{{line: fmt.Sprintf("ERROR: coffset=0x%x: copied flag must never be set for compressed clusters", uint64(e.DecodeCompressed(g).Off))}}
	}
	var out []l2Fault
	if uint64(e)&format.L2ReservedMask != 0 {
		out = append(out, l2Fault{line: fmt.Sprintf("ERROR found l2 entry with reserved bits set: %x", uint64(e))})
	}
	if uint64(e)&format.OflagZero != 0 && g.ExtendedL2 {
		out = append(out, l2Fault{line: fmt.Sprintf("ERROR found l2 entry with the zero flag, which this image cannot have: %x", uint64(e))})
	}
	if !g.Aligned(e.Offset()) {
		f := l2Fault{prealloc: g.ExtendedL2 && bitmap&format.SubAllocAll == 0 || !g.ExtendedL2 && uint64(e)&format.OflagZero != 0}
		what := "Data"
		if f.prealloc {
			what = "Preallocated"
		}
		f.line = fmt.Sprintf("ERROR offset=%x: %s cluster is not properly aligned; L2 entry corrupted.", uint64(e.Offset()), what)
		out = append(out, f)
	}
	if len(out) == 0 {
		out = append(out, l2Fault{})
	}
	return out
}

// Check rebuilds the reference counts from the L1/L2 trees (active and
// snapshots), compares them with the stored refcounts and COPIED flags,
// and reports like qemu-img check. With a repair mode it fixes what it may
// and checks again.
func (im *Image) Check(o CheckOptions) (*CheckResult, error) {
	if o.Repair != RepairNone {
		// A cluster under allocation counts its reference before the
		// link publishes it: repaired as a leak under the allocator, it
		// would be handed out twice. So repairs wait for allocations in
		// flight, as snapshot operations do.
		if err := im.lockIdle(); err != nil {
			return nil, ErrCheckBusy
		}
	} else {
		im.mu.Lock()
	}
	defer im.mu.Unlock()
	if im.closed {
		return nil, fmt.Errorf("qcow2: check: %w", block.ErrClosed)
	}
	if im.snapLoaded {
		// The snapshot's L1 table stands in the active one's place: its
		// references would be counted twice, the active layer's not at
		// all.
		return nil, fmt.Errorf("%w: check: a snapshot is loaded in place of the active layer (LoadSnapshotTemp)", ErrUnsupported)
	}
	// A damaged image is checked and its repair refused in the report
	// (Q19).
	if o.Repair != RepairNone && !im.damage.damaged() && (im.ro || im.writesLost || (im.corrupt && !im.opts.Repair)) {
		return nil, ErrReadOnly
	}
	return im.checkRepairLocked(o)
}

// markCleanAfterCheck clears the dirty bit of an image opened for repair
// with it set (repairDirty left it to the caller's Check, as QEMU's
// BDRV_O_CHECK does) once a Check with repair leaves no corruption and
// no error (leaks may stay, as in QEMU's qcow2_co_check_locked): the
// refcounts are right, and the image may be written again (Q8).
func (im *Image) markCleanAfterCheck(r *CheckResult) error {
	if !im.needRepair || r.Corruptions != 0 || r.CheckErrors != 0 {
		return nil
	}
	if err := im.flushLocked(); err != nil {
		return err
	}
	im.hdr.IncompatibleFeatures &^= format.IncompatDirty
	if err := im.writeHeader(); err != nil {
		im.hdr.IncompatibleFeatures |= format.IncompatDirty
		return err
	}
	if err := im.dev.Flush(); err != nil {
		return err
	}
	im.needRepair, im.dirtySet, im.dirtyKept = false, false, false
	im.syncState()
	return nil
}

// checkRepairLocked is Check's work once it holds mu: check, repair in
// mode o.Repair, and check again after a repair.
func (im *Image) checkRepairLocked(o CheckOptions) (*CheckResult, error) {
	if o.Repair != RepairNone {
		// The flushes of a repair write a state known damaged until
		// it ends (a rebuild's before its switch): the invariants'
		// check at a flush must let it by.
		im.repairing = true
		defer func() { im.repairing = false }()
	}
	r, err := im.checkLocked(o, o.Repair)
	if err != nil || o.Repair == RepairNone {
		return r, err
	}
	if r.Leaks == 0 && r.Corruptions == 0 && r.CorruptionsFixed == 0 && r.LeaksFixed == 0 {
		return r, im.clearCorruptBit(r, o.Repair)
	}
	if r.CorruptionsFixed == 0 && r.LeaksFixed == 0 {
		return r, im.markCleanAfterCheck(r) // nothing changed: nothing to check again (as qemu-img)
	}
	// Check again after repairing, and report what was fixed.
	fixedC, fixedL := r.CorruptionsFixed, r.LeaksFixed
	r2, err := im.checkLocked(o, RepairNone)
	if err != nil {
		return r, err
	}
	r2.CorruptionsFixed, r2.LeaksFixed = fixedC, fixedL
	r2.CheckErrors = max(r2.CheckErrors, r.CheckErrors) // a refused repair
	if r.Err != nil {
		r2.Err = r.Err
	}
	r2.Messages = append(r.Messages, r2.Messages...)
	if err := im.flushLocked(); err != nil {
		return r2, err
	}
	return r2, im.clearCorruptBit(r2, o.Repair)
}

// clearCorruptBit drops the corrupt bit once a repair left the image
// consistent, and the dirty bit of an image opened for repair once its
// refcounts are right (markCleanAfterCheck).
func (im *Image) clearCorruptBit(r *CheckResult, mode RepairMode) error {
	if err := im.markCleanAfterCheck(r); err != nil {
		return err
	}
	// As QEMU's qcow2_co_check_locked: after any repair (-r leaks too)
	// that leaves no corruption and no error.
	if r.Corruptions != 0 || r.CheckErrors != 0 || mode == RepairNone || im.hdr.IncompatibleFeatures&format.IncompatCorrupt == 0 {
		return nil
	}
	im.hdr.IncompatibleFeatures &^= format.IncompatCorrupt
	if err := im.writeHeader(); err != nil {
		return err
	}
	im.corrupt = false
	im.syncState()
	return im.dev.Flush()
}

func (im *Image) checkLocked(o CheckOptions, repair RepairMode) (*CheckResult, error) {
	g := &im.g
	cs := g.ClusterSize
	r := &CheckResult{}
	c := &checker{im: im, r: r, max: o.MaxMessages, out: o.Message, openRepair: o.openRepair}
	if c.max <= 0 {
		c.max = 1000
	}
	fsize, err := im.dev.Size()
	if err != nil {
		return nil, err
	}
	// As QEMU's bdrv_getlength: the file's length in whole 512-byte
	// sectors (a file cut inside a sector reads as zeros to its end).
	// The clusters are the same: a cluster is whole sectors.
	c.fsize = (uint64(fsize) + 511) &^ 511
	if o.openRepair && im.space.slackHi > 0 {
		c.fsize = max(c.fsize, im.space.slackHi<<g.ClusterBits)
	}
	nclusters := (c.fsize + cs - 1) >> g.ClusterBits
	// Clusters the caches or allocator hold past EOF count as in the file
	// (written back later).
	nclusters = max(nclusters, g.HostCluster(im.space.mark()))
	c.ref = make([]uint32, nclusters)
	if fc := (c.fsize + cs - 1) >> g.ClusterBits; im.space.slackHi > fc && !o.live {
		c.slackLo, c.slackHi = max(fc, im.space.slackLo), im.space.slackHi
	}
	r.TotalClusters = int64((im.hdr.Size + cs - 1) >> g.ClusterBits)

	// The header; the refcount table, the LUKS area, the bitmaps and
	// the refcount blocks are counted after the snapshots, in QEMU's
	// order (calculate_refcounts): their messages come in that order.
	// Before them, as QEMU (qcow2_check_read_snapshot_table): a version 3
	// snapshot table entry must record its disk size (16 bytes of extra
	// data at least); QEMU calls one without it incomplete and -r all
	// rewrites it (fixIncompleteSnapshots).
	var incomplete []int
	table := im.snapshots
	if im.snapTable != nil {
		table = im.snapTable // entries left out too, by their place
	}
	if im.hdr.Version >= 3 {
		for i, s := range table {
			if !s.HasDiskSize() {
				verb := "ERROR"
				if repair >= RepairAll && im.snapTable == nil { // (left-out entries: no repair)
					verb = "Repairing"
				}
				c.msg("%s snapshot table entry %d is incomplete", verb, i)
				r.Corruptions++
				incomplete = append(incomplete, i)
			}
		}
	}
	c.inc(0, cs, "header")
	c.reportDamage()
	// Active tree.
	// nextData is where the next data cluster of the L2 table must lie
	// not to count as fragmented, 0 before its first (QEMU's
	// next_contiguous_offset: a first cluster at host offset 0, in a
	// data file, still sets it).
	var nextData format.HostOff
	stats := true
	perSlice := im.sliceSize / im.g.L2EntrySize
	headerRead := false // a snapshot's table at offset 0 was read
	defer func() {
		if headerRead {
			im.dropHeaderSlices()
		}
	}()
	walk := func(l1 []format.L1Entry, active bool) error {
		for i, le := range l1 {
			l2off := le.Offset()
			if uint64(le)&format.L1ReservedMask != 0 {
				c.msg("ERROR found L1 entry with reserved bits set: %x", uint64(le))
				r.Corruptions++
				// As QEMU: the table's references still count.
			}
			if !g.Aligned(l2off) {
				c.msg("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", uint64(l2off))
				r.Corruptions++
				c.distrust(fmt.Sprintf("L1 entry %d is not cluster aligned", i))
				continue
			}
			if l2off == 0 && (active || le == 0) {
				// (An active entry with COPIED alone is checkCopied's.)
				continue
			}
			// A snapshot's entry with COPIED alone names a table at
			// offset 0, as QEMU's check_refcounts_l1 takes it (it tests
			// the entry, not its offset): the header's cluster is read as
			// that table, each entry it finds there counted and reported.
			// Its slices leave the cache after: the header is no L2
			// table for anyone else.
			if l2off == 0 {
				headerRead = true
			}
			c.inc(l2off, cs, "L2 table")
			if g.HostCluster(l2off) >= nclusters {
				continue
			}
			nextData = 0 // as QEMU: contiguity within one L2 table
			// fragStats counts entry e of type kind in the active
			// table's statistics.
			fragStats := func(e format.L2Entry, kind format.ClusterType) {
				switch kind {
				case format.ClusterNormal, format.ClusterZeroAlloc:
					off := e.Offset()
					r.AllocatedClusters++
					if nextData != 0 && off != nextData {
						r.FragmentedClusters++
					}
					nextData = off + format.HostOff(cs)
				case format.ClusterCompressed:
					r.AllocatedClusters++
					r.CompressedClusters++
					r.FragmentedClusters++ // and the next data cluster is judged against the last one
				}
			}
			for s := uint64(0); s < cs; s += im.sliceSize {
				t, err := im.l2c.Get(int64(l2off) + int64(s))
				if err != nil {
					c.unreadable(err, fmt.Sprintf("the L2 table at 0x%x could not be read", uint64(l2off)+s))
					c.msg("ERROR reading L2 table at 0x%x: %v", uint64(l2off)+s, err)
					break
				}
				for k := uint64(0); k < perSlice; k++ {
					e := im.g.L2At(t.Data, k)
					// Version 3's rules in a version 2 image too: QEMU's
					// check takes the zero flag there for a zero cluster
					// (qcow2_get_cluster_type does not look at the
					// version) and counts no corruption; the engine's
					// reads refuse such an entry (Validate, Q9).
					if err := e.Validate(g, 3); err != nil {
						bitmap := g.BitmapAt(t.Data, k)
						zeroed := false
						for _, f := range l2Faults(e, bitmap, g) {
							m := f.line
							if m == "" {
								m = fmt.Sprintf("ERROR L2 entry %d of table 0x%x: %v", s/im.g.L2EntrySize+k, uint64(l2off), err)
							}
							if repair == RepairAll && f.prealloc {
								// As QEMU's fix_l2_entry_by_zero (-r
								// all): a preallocated cluster that is
								// not aligned becomes a zero cluster,
								// and its clusters are not counted: it
								// held no data.
								c.msg("%s", "Repairing"+strings.TrimPrefix(m, "ERROR"))
								if active && stats {
									fragStats(e, e.Type())
								}
								if tableOff := l2off + format.HostOff(s); !active {
									// A snapshot's table is written in
									// place below, past the cache's
									// overlap checks: never over other
									// metadata.
									if what := im.inactiveL2Overlap(tableOff, im.sliceSize); what != "" {
										im.l2c.Put(t)
										return c.refuseOverlap(tableOff, what)
									}
								}
								ne := format.L2Entry(format.OflagZero)
								// With subclusters the allocated ones
								// become zero; the others still read
								// from the backing file.
								nb := (bitmap | bitmap<<32) & format.SubZeroAll
								if g.ExtendedL2 {
									ne = 0
								}
								t.Lock()
								g.PutL2(t.Data, k, ne)
								if g.ExtendedL2 {
									g.PutBitmap(t.Data, k, nb)
								}
								t.Unlock()
								if active {
									im.l2c.MarkDirty(t)
								} else if err := im.writeMeta(t.Data, l2off+format.HostOff(s)); err != nil {
									// A snapshot's table, which the cache
									// writes back only for the active L1:
									// written here, as QEMU's
									// bdrv_pwrite_sync.
									c.ioError(err)
									c.msg("ERROR: Failed to overwrite L2 table entry: %v", err)
									r.Corruptions++
									zeroed = true
									break
								} else if err := im.dev.Flush(); err != nil {
									c.ioError(err)
								}
								r.CorruptionsFixed++
								zeroed = true
								break
							}
							c.msg("%s", m)
							r.Corruptions++
						}
						if zeroed {
							continue // repaired above
						}
						// As QEMU: the clusters it names still count
						// (an unaligned offset counts both clusters it
						// touches), so no repair frees them.
						c.incEntry(e, "of an invalid entry")
						// And in the statistics, as QEMU counts
						// them before it looks at the offset.
						if active && stats {
							fragStats(e, im.kindOf(e))
						}
						continue
					}
					im.checkBitmap(c, e, g.BitmapAt(t.Data, k), s/im.g.L2EntrySize+k, l2off)
					if e.Compressed() && im.df.ext {
						// As QEMU: counted nowhere (its stream would be
						// read from the data file).
						c.msg("ERROR compressed cluster %d with data file, entry=0x%x", s/im.g.L2EntrySize+k, uint64(e))
						r.Corruptions++
						continue
					}
					switch kind := im.kindOf(e); kind { // DF2
					case format.ClusterNormal, format.ClusterZeroAlloc:
						if !im.df.ext { // data file clusters are not refcounted (DF3)
							c.inc(e.Offset(), cs, "data cluster")
						}
						if active && stats {
							fragStats(e, kind)
						}
					case format.ClusterCompressed:
						d := e.DecodeCompressed(g)
						c.inc(d.Off, d.Size, "compressed cluster")
						if active && stats {
							fragStats(e, kind)
						}
					}
				}
				im.l2c.Put(t)
			}
		}
		return nil
	}
	l1 := im.l1.Load()
	c.inc(im.hdr.L1TableOffset, l1.size()*format.TableEntrySize, "L1 table")
	if err := walk(l1.entries(), true); err != nil {
		return nil, err
	}
	// Entries a discard changed and frees once the requests that may
	// still use them are done (zero.go): their references still count.
	for fr := range im.freeing {
		for _, e := range fr.es {
			c.incEntry(e, "being freed")
		}
	}
	// Snapshots.
	if im.hdr.NbSnapshots > 0 {
		// Its first cluster at least, when the open could not parse it
		// (Q19): as QEMU, the table counts even where entries do not.
		c.inc(im.hdr.SnapshotsOffset, max(im.snapLen.Load(), 1), "snapshot table")
		for _, s := range im.snapshots {
			if s.L1Size == 0 {
				continue // no table, wherever it says it is (as QEMU's check_refcounts_l1)
			}
			c.inc(s.L1TableOffset, uint64(s.L1Size)*format.TableEntrySize, "snapshot L1 table")
			l1b := make([]byte, uint64(s.L1Size)*format.TableEntrySize)
			if err := im.readAtLocked(l1b, s.L1TableOffset); err != nil {
				c.unreadable(err, fmt.Sprintf("the L1 table of snapshot %s could not be read", s.ID))
				c.msg("ERROR reading the L1 table of snapshot %s at 0x%x: %v", s.ID, uint64(s.L1TableOffset), err)
				continue
			}
			l1 := make([]format.L1Entry, s.L1Size)
			for i := range l1 {
				l1[i] = format.L1At(l1b, uint64(i))
			}
			if err := walk(l1, false); err != nil {
				return nil, err
			}
		}
	}
	c.inc(im.hdr.RefcountTableOffset, uint64(im.hdr.RefcountTableClusters)*cs, "refcount table")
	c.checkCryptoArea()
	c.countBitmaps()
	// QEMU opens the image read-write for a repair; an image its caller
	// opened ReadOnly is never written, whatever the mode (a repair of
	// it is refused in the report).
	writable := repair != RepairNone && !im.opts.ReadOnly
	for i, b := range im.reftable {
		c.reportReftableEntry(uint64(i))
		if b == 0 || im.damage.reservedRefblocks[uint64(i)] {
			continue // reserved bits: reported, no block counted (as QEMU)
		}
		if c.outside(g.HostCluster(b), nclusters) {
			if repair == RepairAll && writable && !o.rebuilt && !o.live && !c.openRepair && !im.dcap.Fixed && g.HostCluster(b) >= nclusters && c.noRebuild == "" && !c.fatal {
				// As QEMU's check_refblocks: the file grows over the
				// block (reading as zeros, it counts nothing), which
				// counts as in use from then on; the comparison finds
				// its own count 0 and the refcount structures are
				// rebuilt. Not when the rebuild is already refused
				// (noRebuild, fatal damage): the growth would change
				// an image the repair then leaves as it was.
				c.msg("Repairing refcount block %d is outside image", i)
				if n, ok := c.growOver(b, o.Report); ok {
					nclusters = n
					r.CorruptionsFixed++
					c.inc(b, cs, "refcount block")
					continue
				}
				r.Corruptions++
				c.distrustRefcounts(fmt.Sprintf("refcount block %d is outside the image", i))
				continue
			}
			c.msg("ERROR refcount block %d is outside image", i)
			r.Corruptions++
			if repair == RepairAll {
				// -r all rebuilds the structures (QEMU grows the
				// file over the block). -r leaks, as qemu-img's,
				// reports it and goes on: the comparison reads its
				// counts as 0 (a cluster in use there needs the
				// rebuild, as any counted 0), and no fix writes
				// through it.
				c.distrustRefcounts(fmt.Sprintf("refcount block %d is outside the image", i))
			}
			continue
		}
		c.inc(b, cs, "refcount block")
		// A refcount block anything else references is data or
		// metadata too: its entries say nothing, and fixes written
		// through it would overwrite what the other reference holds.
		// Counted as QEMU's check_refblocks counts it, right after its
		// own reference: a block two entries name is reported at the
		// second.
		if k := g.HostCluster(b); k < uint64(len(c.ref)) && c.ref[k] != 1 {
			c.msg("ERROR refcount block %d refcount=%d", i, c.ref[k])
			r.Corruptions++
			if c.sharedBlocks == nil {
				c.sharedBlocks = map[uint64]bool{}
			}
			c.sharedBlocks[uint64(i)] = true
			c.distrustRefcounts(fmt.Sprintf("refcount block %d is also referenced as something else", i))
		}
	}
	// References that end less than a cluster past the end of the file
	// made room for themselves (inc).
	nclusters = uint64(len(c.ref))
	// rebuildPending: -r all rebuilds the refcount structures, once the
	// comparison below has reported what it finds, fixing nothing (as
	// qemu-img: compare_refcounts without a fix, then "Rebuilding
	// refcount structure"); its counts are what the rebuild fixes.
	rebuildPending := false
	if c.untrusted != "" && repair == RepairAll && !c.fatal && c.noRebuild == "" && !o.rebuilt {
		rebuildPending = true
		repair = RepairNone
	}
	// rebuildNeeded: -r leaks where -r all would rebuild the refcount
	// structures: qemu-img's words come after the comparison, which
	// reports without fixing (compare_refcounts, then "ERROR need to
	// rebuild refcount structures"), and nothing is fixed.
	rebuildNeeded := false
	if c.untrusted != "" && repair != RepairNone {
		// qemu-img: "ERROR need to rebuild refcount structures", and
		// with -r all it rebuilds them, as Check does when it can.
		switch {
		case o.rebuilt:
			// The rebuild has changed the image already.
			c.msg("ERROR need to rebuild refcount structures (%s) after their rebuild; not repaired again", c.untrusted)
		case c.unread:
			c.msg("ERROR not repaired: a table of references could not be read (what it names would look unused); the image is left as it was")
		case c.im.damage.damaged() && c.fatal && repair == RepairLeaks && (len(c.im.damage.badRefblocks) > 0 || len(c.im.damage.reservedRefblocks) > 0):
			// As qemu-img check -r leaks: a damaged refcount table
			// entry asks for a rebuild (check_refblocks), which it
			// says after the comparison, and stops; the damage
			// elsewhere no rebuild cures is reported above. Nothing is
			// repaired (an unaligned block's corruption event marks
			// the image corrupt, as QEMU's).
			rebuildNeeded = true
		case c.im.damage.damaged() && c.fatal && writable && len(c.im.damage.badRefblocks) > 0:
			// The unaligned block's corruption event the comparison
			// meets marks the image corrupt (as QEMU's, whose rebuild
			// then fails): it is not left as it was.
			c.msg("ERROR not repaired: %s; repairing them is not implemented, nothing is repaired", c.untrusted)
		case c.im.damage.damaged() && c.fatal:
			c.msg("ERROR not repaired: %s; repairing them is not implemented, the image is left as it was", c.untrusted)
		case c.fatal:
			c.msg("ERROR need to rebuild refcount structures (%s); not repaired: a rebuild would free clusters still in use, the image is left as it was", c.untrusted)
		case c.noRebuild != "":
			c.msg("ERROR need to rebuild refcount structures (%s); not repaired: a rebuild would write them over %s", c.untrusted, c.noRebuild)
		default:
			rebuildNeeded = true
		}
		r.CheckErrors++
		repair = RepairNone
	}
	// Compare with the stored refcounts, over the file and every
	// refcount block, one block at a time (a refcount block can hold 16M
	// entries: no per-entry cache lookups).
	var highest uint64
	var fixes []fix
	fixedBefore := r.CorruptionsFixed // the fixes made before this comparison
	inUseFree := false                // a referenced cluster counted 0: QEMU's "rebuild"
	// QEMU compares twice when it repairs: the second pass says
	// "Repairing" for what it fixes, and repeats the rest.
	type mismatch struct {
		k, stored, want uint64
		unread          bool // its refcount could not be read: QEMU's second pass says so again
	}
	var mismatches []mismatch
	compare := func(k, stored uint64) {
		if c.pastEOF[k] {
			return
		}
		want := uint64(0)
		if k < nclusters {
			want = min(uint64(c.ref[k]), g.RefcountMax)
		}
		if stored > 0 || want > 0 {
			highest = max(highest, k)
		}
		switch {
		case stored > want:
			// After a rebuild QEMU compares once, fixing leaks: only
			// its "Repairing" lines (below).
			if !o.rebuilt {
				c.msg("Leaked cluster %d refcount=%d reference=%d", k, stored, want)
			}
			mismatches = append(mismatches, mismatch{k: k, stored: stored, want: want})
			r.Leaks++
			if repair >= RepairLeaks {
				fixes = append(fixes, fix{k, want})
				r.LeaksFixed++
			}
		case stored < want:
			c.msg("ERROR cluster %d refcount=%d reference=%d", k, stored, want)
			mismatches = append(mismatches, mismatch{k: k, stored: stored, want: want})
			r.Corruptions++
			inUseFree = inUseFree || stored == 0
			if repair >= RepairAll {
				fixes = append(fixes, fix{k, want})
				r.CorruptionsFixed++
			}
		}
	}
	nblocks := max(uint64(len(im.reftable)), (nclusters+g.RefblockEntries-1)>>g.RefblockBits)
	for ri := uint64(0); ri < nblocks; ri++ {
		base := ri << g.RefblockBits
		b := format.HostOff(0)
		if ri < uint64(len(im.reftable)) {
			b = im.reftable[ri]
		}
		if bad, ok := im.damage.badRefblocks[ri]; ok && base < nclusters {
			// An unaligned refcount block (reported above): as
			// qemu-img, one error for each cluster it should count,
			// after QEMU's corruption event (qcow2_get_refcount).
			c.refblockUnaligned(bad, ri, writable, rebuildPending)
			for k := base; k < min(base+g.RefblockEntries, nclusters); k++ {
				r.CheckErrors++
				c.refcountErrs++
				c.msg("Can't get refcount for cluster %d: Input/output error", k)
			}
			continue
		}
		if b != 0 && uint64(b)+cs > qemuMaxLength {
			// A block QEMU's block layer cannot read (outside the
			// image, reported above): as qemu-img, one error for each
			// cluster it should count, and QEMU's second comparison
			// (a repair's) says so again. Nothing there is compared.
			for k := base; k < min(base+g.RefblockEntries, nclusters); k++ {
				r.CheckErrors++
				c.refcountErrs++
				c.msg("Can't get refcount for cluster %d: Input/output error", k)
				mismatches = append(mismatches, mismatch{k: k, unread: true})
			}
			continue
		}
		if b == 0 || c.outside(g.HostCluster(b), nclusters) {
			// No block, or one outside the image (reported above, and
			// nothing there to read): every stored refcount is 0.
			for k := base; k < min(base+g.RefblockEntries, nclusters); k++ {
				compare(k, 0)
			}
			continue
		}
		t, err := im.rbc.Get(int64(b))
		if err != nil {
			c.ioError(err)
			c.msg("ERROR reading refcount block %d: %v", ri, err)
			continue
		}
		t.Lock()
		for bi := uint64(0); bi < g.RefblockEntries; bi++ {
			k := base + bi
			stored := format.GetRefcount(t.Data, g.RefcountOrder, bi)
			if stored == 0 && k >= nclusters {
				continue
			}
			if k >= nclusters && c.sharedBlocks[ri] {
				// A block that is also something else (reported
				// above) holds no refcounts: what it says past the end
				// of the file is no leak (qemu-img does not look there
				// either; a rebuild drops the block).
				continue
			}
			// A count past the end of the file is a leak (qemu-img does
			// not look there): a crash can leave one behind a lost file
			// extension, and it would turn into a leak once the file
			// grows over it.
			compare(k, stored)
		}
		t.Unlock()
		im.rbc.Put(t)
	}
	r.ImageEndOffset = int64((highest + 1) << g.ClusterBits)
	c.damageSeen()
	if rebuildPending {
		return im.rebuildAndCheck(c, o)
	}
	if inUseFree && repair == RepairAll && !o.rebuilt && c.noRebuild == "" {
		// As qemu-img check -r all: a cluster in use that the
		// refcounts call free makes QEMU rebuild the refcount
		// structures (compare_refcounts' rebuild), nothing fixed in
		// place before.
		c.distrustRefcounts("referenced clusters have refcount 0")
		// The comparison's fixes are not made: the rebuild fixes
		// what it found.
		r.CorruptionsFixed, r.LeaksFixed = fixedBefore, 0
		return im.rebuildAndCheck(c, o)
	}
	skipCopied := false
	if rebuildNeeded {
		c.msg("ERROR need to rebuild refcount structures")
		skipCopied = true // QEMU stops before check_oflag_copied
	}
	if inUseFree && repair == RepairAll && c.noRebuild != "" {
		// The rebuild it needs is refused: nothing is fixed, as with
		// -r leaks below.
		c.msg("ERROR need to rebuild refcount structures (referenced clusters have refcount 0); not repaired: a rebuild would write them over %s", c.noRebuild)
		r.CheckErrors++
		fixes, r.LeaksFixed, r.CorruptionsFixed, repair = nil, 0, fixedBefore, RepairNone
		skipCopied = true
	}
	if inUseFree && repair == RepairLeaks {
		// As qemu-img check -r leaks: a cluster in use that the
		// refcounts call free needs the -r all repair (QEMU rebuilds
		// the refcount structures then), and nothing is fixed before
		// it (a leak fix could free what the missing counts hide).
		// qemu-img's words; -r all rebuilds them, and the image is
		// left as it was.
		c.msg("ERROR need to rebuild refcount structures")
		r.CheckErrors++
		fixes, r.LeaksFixed, repair = nil, 0, RepairNone
		skipCopied = true // QEMU stops before check_oflag_copied
	}
	if repair != RepairNone && !inUseFree { // (QEMU rebuilds, or refuses, instead)
		for _, m := range mismatches {
			if m.unread {
				c.msg("Can't get refcount for cluster %d: Input/output error", m.k)
				continue
			}
			verb := "Leaked"
			switch {
			case m.stored > m.want && repair >= RepairLeaks, m.stored < m.want && repair >= RepairAll:
				verb = "Repairing"
			case m.stored < m.want:
				verb = "ERROR"
			}
			c.msg("%s cluster %d refcount=%d reference=%d", verb, m.k, m.stored, m.want)
		}
	}
	if len(fixes) > 0 {
		im.punchLeaked(fixes, uint64(fsize))
		if err := im.applyFixes(fixes, nclusters); err != nil {
			r.LeaksFixed, r.CorruptionsFixed = 0, 0 // not known durable, or not made
			return r, err
		}
	}
	// COPIED flags (Q6), against the stored (possibly repaired)
	// refcounts.
	if len(incomplete) > 0 && repair >= RepairAll && c.untrusted == "" && c.noRebuild != "" {
		// The new table would go past the end of the file, over the
		// region referenced there (noRebuild), and the guest would
		// read it (QEMU's does that).
		c.msg("ERROR snapshot table entries not repaired: their new table would be written over %s", c.noRebuild)
		r.CheckErrors++
	} else if len(incomplete) > 0 && repair >= RepairAll && c.untrusted == "" {
		if err := im.fixIncompleteSnapshots(incomplete); err != nil {
			c.ioError(err)
			c.msg("ERROR rewriting the snapshot table: %v", err)
		} else {
			r.CorruptionsFixed += len(incomplete)
		}
	}
	// With -r leaks, as QEMU's check_oflag_copied: only when the
	// refcounts are now right, nothing else being wrong (the flags are
	// set from them).
	fixCopied := repair >= RepairAll || (repair == RepairLeaks && r.CheckErrors == 0 &&
		r.Corruptions == 0 && r.Leaks == r.LeaksFixed)
	if skipCopied {
		return r, nil
	}
	if err := im.checkCopied(c, fixCopied); err != nil {
		return r, err
	}
	return r, nil
}

type fix struct {
	c    uint64
	want uint64
}

// punchLeaked gives the host space of the leaked clusters that fixes
// free (a count repaired down to 0) back to the file system, as QEMU's
// check does: its leak fixes drop the counts with QCOW2_DISCARD_ALWAYS,
// so update_refcount discards every cluster whose count reaches 0
// whatever the image's discard options. Nothing references them (the
// tables in memory go to the media first, so no table there does
// either, even after a crash) and, their counts not yet dropped,
// nothing can allocate them while the hole is made (mu held, no
// allocation in flight: Check's lockIdle). Only inside the file, and
// only on devices that zero efficiently, as punchFreed; best effort: an
// error leaves the space allocated, still leaked bytes but no longer
// counted.
func (im *Image) punchLeaked(fixes []fix, fsize uint64) {
	if c := im.dev.Caps(); c.ZeroFlags&(block.MayUnmap|block.Allocate) != block.MayUnmap|block.Allocate {
		return
	}
	cs := im.g.ClusterSize
	type hostRange struct{ off, end uint64 }
	var rs []hostRange
	for _, f := range fixes {
		off := uint64(im.g.HostClusterOff(f.c))
		if f.want != 0 || off >= fsize {
			continue
		}
		end := min(off+cs, fsize)
		if k := len(rs) - 1; k >= 0 && rs[k].end == off {
			rs[k].end = end
		} else {
			rs = append(rs, hostRange{off, end})
		}
	}
	if len(rs) == 0 {
		return
	}
	if im.tablesDurable() != nil {
		return
	}
	for _, r := range rs {
		if err := im.dev.WriteZeroes(int64(r.off), int64(r.end-r.off), block.MayUnmap); err != nil {
			return
		}
		im.c.punchedBytes.Add(int64(r.end - r.off))
	}
}

// tablesDurable writes the L2 tables in memory and flushes the device:
// no table on the media references what none in memory does.
func (im *Image) tablesDurable() error {
	if err := im.l2c.Write(); err != nil {
		return err
	}
	return im.dev.Flush()
}

func (im *Image) applyFixes(fixes []fix, nclusters uint64) error {
	// A count lowered (a leak fixed) may be a reference whose removal
	// a failed flush left off the media (freeAfterWriters leaks them):
	// the lowered count must not reach the media before the removal
	// (Q3), so the tables are made durable first, or nothing is fixed.
	for _, f := range fixes {
		cur, err := im.refcount(f.c)
		if err != nil {
			return err
		}
		if cur > f.want {
			if err := im.tablesDurable(); err != nil {
				return err
			}
			break
		}
	}
	// New refcount blocks must not land on referenced clusters whose
	// counts are wrong: allocate past everything.
	im.freeIdx = max(im.freeIdx, nclusters, im.g.HostCluster(im.space.mark()))
	for _, f := range fixes {
		for tries := 0; ; tries++ {
			cur, err := im.refcount(f.c)
			if err != nil {
				return err
			}
			if cur == f.want {
				break
			}
			// A 64-bit count may lie further above want than an int64
			// delta reaches (garbage in a refcount block): lower it in
			// steps.
			delta, partial := int64(f.want)-int64(cur), false
			if cur > f.want && cur-f.want > math.MaxInt64 {
				delta, partial = -math.MaxInt64, true
			}
			err = im.updateRefcountLocked(f.c, delta)
			if err == errRetry && tries < 8 {
				continue
			}
			if err != nil {
				return err
			}
			if partial {
				continue
			}
			if f.want == 0 {
				// A leak may be an entry whose change a failed flush
				// left off the media (freeAfterWriters leaks them): not
				// given out before a flush has made the tables durable
				// (Q3; the repair's own flush, normally).
				im.holdLocked(f.c, true)
			}
			break
		}
	}
	im.freeIdx = 0
	return nil
}

// fixIncompleteSnapshots rewrites the snapshot table with the entries
// at idx completed: extra data recording the VM state size, the image's
// current size as the disk size and no instruction count, what QEMU
// assumes for them and writes back.
func (im *Image) fixIncompleteSnapshots(idx []int) error {
	if im.snapTable != nil { // entries left out: damage, never repaired (Q19)
		return fmt.Errorf("%w: the snapshot table is damaged", ErrCorrupt)
	}
	snaps := append([]format.Snapshot(nil), im.snapshots...)
	for _, i := range idx {
		s := &snaps[i]
		extra := format.SnapshotExtra(uint64(s.VMStateSize), im.hdr.Size, -1)
		if len(s.ExtraData) >= 8 { // vm_state_size_large is there
			copy(extra[:8], s.ExtraData)
		}
		s.ExtraData, s.DiskSize = extra, im.hdr.Size
	}
	return im.writeSnapshotTableLocked(snaps)
}

// checkCopied checks the COPIED flags of the active L1 and L2 entries
// against the stored refcounts (Q6), and with fix sets them right.
func (im *Image) checkCopied(c *checker, fix bool) error {
	g := &im.g
	r := c.r
	l1 := im.l1.Load()
	perSlice := im.sliceSize / im.g.L2EntrySize
	verb := "ERROR" // as QEMU's check_oflag_copied
	if fix {
		verb = "Repairing"
		// A flag is set from a count of 1 only once that count is
		// durable (Q6): the counts this repair lowered, or a failed
		// flush left off the media (a snapshot delete's), are in the
		// cache only, and nothing orders the flags' writes after
		// them. Without the flush, no flag is repaired.
		if err := im.flushLocked(); err != nil {
			return err
		}
	}
	for i := range l1.size() {
		le := l1.load(i)
		l2off := le.Offset()
		if l2off == 0 && le.Copied() {
			// No table, yet COPIED: qemu-img check reads the header's
			// cluster as its table (a corruption for each entry it
			// finds there); reads take it for unallocated, as here.
			c.msg("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=0", verb, i, uint64(le))
			r.Corruptions++
			if fix {
				l1.store(i, format.MakeL1(0, false))
				if err := im.writeL1Entry(i); err != nil {
					return err
				}
				r.CorruptionsFixed++
			}
			continue
		}
		if l2off == 0 || le.Validate(g) != nil || g.HostCluster(l2off) >= uint64(len(c.ref)) || !im.refcountKnown(g.HostCluster(l2off), uint64(len(c.ref))) {
			continue
		}
		rc, err := im.refcount(g.HostCluster(l2off))
		if err != nil {
			return err
		}
		if (rc == 1) != le.Copied() {
			c.msg("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", verb, i, uint64(le), rc)
			r.Corruptions++
			if fix {
				l1.store(i, format.MakeL1(le.Offset(), rc == 1))
				if err := im.writeL1Entry(i); err != nil {
					return err
				}
				r.CorruptionsFixed++
			}
		}
		for s := uint64(0); s < g.ClusterSize; s += im.sliceSize {
			t, err := im.l2c.Get(int64(l2off) + int64(s))
			if err != nil {
				return err
			}
			for k := uint64(0); k < perSlice; k++ {
				e := im.g.L2At(t.Data, k)
				// An invalid entry (reported already) is checked and
				// repaired too, as QEMU's check_oflag_copied does: its
				// COPIED flag is all that changes.
				ty := im.kindOf(e) // DF2
				if ty != format.ClusterNormal && ty != format.ClusterZeroAlloc {
					continue
				}
				rc, known, err := im.dataRefcount(c, e)
				if err != nil {
					im.l2c.Put(t)
					return err
				}
				if !known {
					continue
				}
				if (rc == 1) != e.Copied() {
					c.msg("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", verb, uint64(e), rc)
					r.Corruptions++
					if fix {
						ne := e &^ format.OflagCopied
						if rc == 1 {
							ne |= format.OflagCopied
						}
						t.Lock()
						im.g.PutL2(t.Data, k, ne)
						t.Unlock()
						im.l2c.MarkDirty(t)
						r.CorruptionsFixed++
					}
				}
			}
			im.l2c.Put(t)
		}
	}
	return nil
}

// dropHeaderSlices drops the header's cluster from the L2 cache, where
// the check of a snapshot's table at offset 0 read it.
func (im *Image) dropHeaderSlices() {
	for s := uint64(0); s < im.g.ClusterSize; s += im.sliceSize {
		im.l2c.Discard(int64(s))
	}
}

func (im *Image) readAtLocked(p []byte, off format.HostOff) error {
	var v [1][]byte
	v[0] = p
	return im.dev.Readv(int64(off), v[:])
}
