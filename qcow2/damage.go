package qcow2

import (
	"fmt"

	"github.com/qring/qring/qcow2/format"
)

// Damage an open let by (Q19). A writable open refuses an image whose
// tables are damaged: an L1 or refcount table entry that is not cluster
// aligned or has reserved bits set, tables that overlap, a snapshot
// table that does not parse. QEMU opens such images and walks them in
// qemu-img check, so a read-only or repairing open does too: it notes
// the damage here, and then
//   - the image is read-only, even when opened for repair: not even the
//     dirty-bit repair or the autoclear rewrite runs;
//   - a read through a damaged L1 entry fails with ErrCorrupt;
//   - Check reports every piece as a corruption, and refuses to repair
//     anything (its counts of the damaged parts are not to be trusted),
//     so the image is left as it was; except where all the damage lies
//     in the refcount structures (fatal is false) and the image was
//     opened for repair: -r all rebuilds them (rebuild.go), and the
//     image is writable afterwards (cureDamageLocked).
type openDamage struct {
	first error    // the first damage seen; nil when none
	msgs  []string // what only the open sees, reported by Check as corruptions
	// fatal says some of the damage is not in the refcount structures:
	// rebuilding them (rebuild.go) would not cure it.
	fatal bool
	// badRefblocks are refcount table entries that are not cluster
	// aligned, by index; the in-memory refcount table holds 0 there.
	badRefblocks map[uint64]format.HostOff
	// reservedRefblocks are refcount table entries with reserved bits
	// set, by index: lookups use them masked (as QEMU's), and Check
	// counts no refcount block there, as QEMU's check_refblocks, which
	// reports the bits and goes on to the next entry.
	reservedRefblocks map[uint64]bool
	// reftableMsgs are Check's reports of damaged refcount table
	// entries, by index: they come in the table's order, where QEMU's
	// check_refblocks prints them, not with the open's other damage.
	reftableMsgs map[uint64]string
	// l1Unaligned says some active L1 entry is not cluster aligned:
	// lookups check the entry they use (l2slice).
	l1Unaligned bool
	// noReftable says the image has no refcount table (an open for
	// check: format.ParseHeaderForCheck). Check's comparison finds it
	// itself, every cluster in use counted 0, as QEMU's; alone, it does
	// not make Check distrust the refcounts before that.
	noReftable bool
	count      int // pieces of damage noted
}

// note records damage that a rebuild of the refcount structures would
// not cure; msg, if not "", is reported by Check.
func (d *openDamage) note(err error, msg string) {
	d.noteMsg(err, msg)
	d.fatal = true
}

// noteRefcounts records damage, fatal unless refcounts says a rebuild of
// the refcount structures cures it.
func (d *openDamage) noteRefcounts(err error, refcounts bool) {
	d.noteMsg(err, "")
	d.fatal = d.fatal || !refcounts
}

func (d *openDamage) noteMsg(err error, msg string) {
	d.count++
	if d.first == nil {
		d.first = err
	}
	if msg != "" {
		d.msgs = append(d.msgs, msg)
	}
}

// damaged reports whether the open let damage by.
func (d *openDamage) damaged() bool { return d.first != nil }

// Damage reports the damage a read-only or repairing open let by (Q19),
// as an ErrCorrupt error naming the first piece, or nil. Such an image is
// read-only; a tool that would act on what it reads (commit empties the
// image afterwards) may refuse it.
func (im *Image) Damage() error {
	im.mu.Lock() // a repair's rebuild may cure it (cureDamageLocked)
	defer im.mu.Unlock()
	return im.damage.first
}

// lenientReftableEntry handles an invalid refcount table entry v at
// index i for a lenient open: reserved bits are masked off (QEMU ignores
// them), an unaligned block is remembered and left out. It returns the
// entry to install.
func (im *Image) lenientReftableEntry(i uint64, v format.HostOff, err error) format.HostOff {
	d := &im.damage
	reserved := uint64(v)&format.RefTableReserved != 0
	note := func(msg string) {
		d.noteMsg(err, "")
		if d.reftableMsgs == nil {
			d.reftableMsgs = make(map[uint64]string)
		}
		d.reftableMsgs[i] = msg
	}
	if reserved {
		note(fmt.Sprintf("ERROR refcount table entry %d has reserved bits set", i))
		v = format.HostOff(uint64(v) & format.RefTableOffMask)
		if d.reservedRefblocks == nil {
			d.reservedRefblocks = make(map[uint64]bool)
		}
		d.reservedRefblocks[i] = true
	}
	if !im.g.Aligned(v) {
		if !reserved { // QEMU's check says no more of such an entry
			note(fmt.Sprintf("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i))
		}
		if d.badRefblocks == nil {
			d.badRefblocks = make(map[uint64]format.HostOff)
		}
		d.badRefblocks[i] = v
		return 0
	}
	return v
}

// lenientL1Entry handles an invalid active L1 entry for a lenient open:
// it is installed as it is (Check reports it), and an unaligned one
// makes lookups check what they use.
func (im *Image) lenientL1Entry(e format.L1Entry, err error) {
	im.damage.note(err, "")
	if !im.g.Aligned(e.Offset()) {
		im.damage.l1Unaligned = true
	}
}

// damagedL1 is the error for a lookup through active L1 entry e, nil
// when e may be used.
func (im *Image) damagedL1(l1i uint64, e format.L1Entry) error {
	if !im.damage.l1Unaligned || im.g.Aligned(e.Offset()) {
		return nil
	}
	return corruptf("l1_entry", uint64(e), "L2 table %d offset not cluster aligned", l1i)
}

// reportDamage adds what the open let by to a check: each piece is a
// corruption, and repairs are refused.
func (c *checker) reportDamage() {
	d := &c.im.damage
	if !d.damaged() {
		return
	}
	for _, m := range d.msgs {
		c.msg("%s", m)
		c.r.Corruptions++
	}
	// (reftableMsgs come with the refcount blocks: reportReftableEntry.)
	if d.noReftable && d.count == 1 {
		return // the comparison finds it (compare_refcounts' rebuild)
	}
	why := fmt.Sprintf("the image's tables are damaged (%v)", d.first)
	if d.fatal || c.im.opts.ReadOnly {
		c.distrust(why)
		return
	}
	c.distrustRefcounts(why) // a rebuild cures it (-r all)
}

// damageSeen makes sure a check of a damaged image reports a corruption
// even where the walk found none: the open saw the damage.
func (c *checker) damageSeen() {
	if c.im.damage.damaged() && c.r.Corruptions == 0 {
		c.msg("ERROR %v", c.im.damage.first)
		c.r.Corruptions++
	}
}

// refcountKnown reports whether host cluster hc's stored refcount can be
// read: false when its refcount block's entry is damaged, or points
// outside the image (at or past nclusters).
func (im *Image) refcountKnown(hc, nclusters uint64) bool {
	ri := hc >> im.g.RefblockBits
	if _, bad := im.damage.badRefblocks[ri]; bad {
		return false
	}
	return ri >= uint64(len(im.reftable)) || im.g.HostCluster(im.reftable[ri]) < nclusters
}

// reportReftableEntry reports the damage of refcount table entry i the
// open let by, in the table's order (QEMU's check_refblocks).
func (c *checker) reportReftableEntry(i uint64) {
	if m, ok := c.im.damage.reftableMsgs[i]; ok {
		c.msg("%s", m)
		c.r.Corruptions++
	}
}
