package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Persistent dirty bitmaps, maintained while the image is open (Q22), as
// QEMU maintains them: a writable open loads every bitmap not already
// in use, sets IN_USE on it in the directory and flushes before the
// first write; every write, zeroing and discard sets the bits of its
// range in the enabled (AUTO) bitmaps before it starts; Close, after its
// flush, writes each changed bitmap to new clusters and clears IN_USE.
// A crash while the image is open leaves the bitmaps IN_USE, which
// QEMU takes for inconsistent: never a bitmap that claims to be valid
// and misses a write. A bitmap already IN_USE at open stays as it is.
//
// Anything this code does not handle (an unknown flag or type, extra
// data, a table of the wrong size, a cluster that is not the bitmap's
// own) makes the open clear the bitmaps' autoclear bit instead, as
// before: QEMU then ignores them, and their clusters leak. A resize
// resizes them (bitmaps_resize.go); a downgrade to version 2, or a size
// change whose header write failed, stops maintaining them
// (stopBitmapsLocked).

// errBitmapWritersBusy: Close found guest writes that did not leave,
// and left the bitmaps IN_USE.
var errBitmapWritersBusy = errors.New("qcow2: guest writes still in flight at Close: dirty bitmaps left in use")

// QEMU's bounds on a bitmap (BME_MAX_TABLE_SIZE, BME_MAX_PHYS_SIZE):
// its table's entries, and the bytes of its data clusters, which the
// engine holds in memory. QEMU refuses to open an image with a bitmap
// past them; the engine does not maintain it (and so does not allocate
// what a hostile entry asks for).
const (
	maxBitmapTable = 0x8000000
	maxBitmapPhys  = 0x20000000
)

// bitmapSet is the bitmaps of an open image, published for the
// lock-free write paths (Image.bitmaps; nil when none is maintained).
type bitmapSet struct {
	ext  format.BitmapsExt
	dir  []byte // the directory's clusters, as on the media but for IN_USE
	bms  []*liveBitmap
	size uint64 // the virtual size the bitmaps cover
}

// maintains reports whether set holds a bitmap to maintain.
func (set *bitmapSet) maintains() bool {
	if set == nil {
		return false
	}
	for _, b := range set.bms {
		if b.consistent() {
			return true
		}
	}
	return false
}

// liveBitmap is one bitmap of the directory.
type liveBitmap struct {
	e format.BitmapEntry
	// bits is the bitmap at the disk's size, nil for a bitmap left as
	// it was found (IN_USE at open). A resize replaces it by one that
	// shares its words (bitWords).
	bits    atomic.Pointer[bitWords]
	enabled atomic.Bool // AUTO: writes set bits
	changed atomic.Bool
	// own are the clusters of its table and data, given back once a new
	// table replaced it.
	own []format.HostOff
}

// markDirty sets the bits of [off, off+n) in every enabled bitmap.
func (im *Image) markDirty(off, n int64) {
	set := im.bitmaps.Load()
	if set == nil || n <= 0 || off < 0 {
		return
	}
	for _, b := range set.bms {
		if b.enabled.Load() {
			b.mark(uint64(off), uint64(n))
		}
	}
}

// consistent reports whether b is maintained (not IN_USE at open).
func (b *liveBitmap) consistent() bool { return b.bits.Load() != nil }

// mark sets the bits of the granules [off, off+n) touches (n > 0).
func (b *liveBitmap) mark(off, n uint64) {
	v := b.bits.Load()
	if v == nil {
		return
	}
	g := uint(b.e.GranularityBits)
	first, last := off>>g, (off+n-1)>>g
	if first >= v.nbits {
		return
	}
	v.mark(first, min(last, v.nbits-1))
	if !b.changed.Load() {
		b.changed.Store(true)
	}
}

// loadBitmaps starts maintaining the bitmaps of an image opened
// writable, or clears their autoclear bit when it cannot (Q22).
func (im *Image) loadBitmaps() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.bitmapsKept {
		return nil
	}
	if im.hdr.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		// clearAutoclear may just have marked them stale (NoBitmaps):
		// that is durable before the first write, or a crash could keep
		// a write and lose the header, leaving bitmaps that claim to be
		// valid and miss it (QEMU's update_header_sync flushes too).
		if im.bitmapsExt() != nil {
			return im.dev.Flush()
		}
		return nil
	}
	set, err := im.readBitmapsLocked()
	if err == nil && !set.maintains() {
		// Every bitmap IN_USE already: kept as it is, nothing to write;
		// the set is still what RemoveBitmap and AddBitmap edit.
		if set != nil {
			im.bitmaps.Store(set)
		}
		return nil
	}
	if err == nil {
		err = im.writeBitmapDirLocked(set, func(b *liveBitmap) uint32 { return b.e.Flags | format.BitmapInUse })
		if err == nil {
			err = im.dev.Flush()
		}
		if err == nil {
			im.bitmaps.Store(set)
			return nil
		}
	}
	// Not maintained: stale for QEMU, as before Q22 (the directory may
	// hold IN_USE flags now, which says the same).
	im.hdr.AutoclearFeatures &^= format.AutoclearBitmaps
	if err := im.writeHeader(); err != nil {
		return err
	}
	// Durable before the first write, as above.
	return im.dev.Flush()
}

// bitmapsMaintainable fails, before the writable open writes anything
// (a dirty image's repair included, as QEMU loads the bitmaps before
// it), when it finds bitmaps loadBitmaps could not maintain (unless
// Options.NoBitmaps asks to drop them). A dirty image's refcounts are not trusted until
// its repair: its bitmap clusters are not checked against them here
// (loadBitmaps does, after the repair).
func (im *Image) bitmapsMaintainable() error {
	h := im.hdr
	if im.opts.Repair || im.opts.NoBitmaps ||
		h.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		return nil
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if _, err := im.readBitmapsChecked(h.IncompatibleFeatures&format.IncompatDirty == 0); err != nil {
		return fmt.Errorf("persistent bitmaps cannot be maintained: %w", err)
	}
	return nil
}

// bitmapsExt is the bitmaps header extension's data, nil without one.
func (im *Image) bitmapsExt() []byte {
	var data []byte
	for _, e := range im.hdr.Extensions {
		if e.Type == format.ExtBitmaps {
			// A zero-length extension is a broken one (QEMU:
			// "Invalid extension length"), not an absent one.
			data = append([]byte{}, e.Data...)
		}
	}
	return data
}

// stopBitmapsLocked stops maintaining the bitmaps, for a downgrade
// (version 2 has none) or a failed size change: they stay IN_USE on the
// media, which QEMU takes for inconsistent (their clusters stay
// counted), as after a crash.
func (im *Image) stopBitmapsLocked() { im.bitmaps.Store(nil) }

// readBitmapsLocked reads the directory and every bitmap not in use. An
// error means the bitmaps cannot be maintained; a nil set that there is
// nothing to maintain.
func (im *Image) readBitmapsLocked() (*bitmapSet, error) {
	return im.readBitmapsChecked(true)
}

// readBitmapsChecked is readBitmapsLocked; without refcounts, a bitmap
// cluster counted free is not refused (a dirty image's refcounts are
// not to be trusted before its repair).
func (im *Image) readBitmapsChecked(refcounts bool) (*bitmapSet, error) {
	data := im.bitmapsExt()
	if data == nil {
		return nil, nil
	}
	g := &im.g
	cs := g.ClusterSize
	ext, err := format.ParseBitmapsExt(data)
	if err != nil {
		return nil, err
	}
	fsize, err := im.dev.Size()
	if err != nil {
		return nil, err
	}
	seen := map[uint64]bool{}
	// claim checks that [off, off+n) is clusters of the bitmaps' own:
	// inside the file, counted, no other metadata, claimed once.
	claim := func(off format.HostOff, n uint64) error {
		if !g.Aligned(off) || uint64(off) > uint64(fsize) || n > uint64(fsize)-uint64(off) || n == 0 {
			return corruptf("bitmaps", uint64(off), "cluster not aligned or past the end of the file")
		}
		if what := im.staticOverlap(off, n); what != "" {
			return corruptf("bitmaps", uint64(off), "bitmap cluster overlaps the %s", what)
		}
		for c := g.HostCluster(off); c < g.HostCluster(off+format.HostOff(n+cs-1)); c++ {
			if seen[c] || im.meta.get(c) != 0 {
				return corruptf("bitmaps", c, "bitmap cluster %d used twice", c)
			}
			if refcounts { // else not trusted: a dirty image before its repair
				if rc, err := im.refcount(c); err != nil || rc == 0 {
					// QEMU opens such an image (it never looks at the
					// refcounts there), but maintaining it would hand the
					// cluster to guest data, and freeing it would free theirs;
					// dropping the bitmaps loses them: refused, with the
					// way out.
					return corruptf("bitmaps", c, "bitmap cluster %d is free (its refcount is 0: check -r all repairs that)", c)
				}
			}
			seen[c] = true
		}
		return nil
	}
	if err := claim(ext.DirOffset, ext.DirSize); err != nil {
		return nil, err
	}
	dirLen := (ext.DirSize + cs - 1) &^ (cs - 1)
	dir := block.AlignedBuf(int(dirLen), im.memAlign)
	if err := im.readAtLocked(dir, ext.DirOffset); err != nil {
		return nil, err
	}
	entries, err := format.ParseBitmapDirectory(dir[:ext.DirSize], ext.N)
	if err != nil {
		return nil, err
	}
	set := &bitmapSet{ext: ext, dir: dir, size: im.hdr.Size}
	names := map[string]bool{}
	for _, e := range entries {
		if names[e.Name] {
			return nil, unsupportedf("bitmaps", uint64(e.At), "two bitmaps named %q", e.Name)
		}
		names[e.Name] = true
		b := &liveBitmap{e: e}
		set.bms = append(set.bms, b)
		if why := unmaintainable(e, set.size, cs); why != "" {
			return nil, unsupportedf("bitmaps", uint64(e.At), "bitmap %q: not one this engine maintains (%s)", e.Name, why)
		}
		if e.Flags&format.BitmapInUse != 0 {
			// Inconsistent already: kept as it is, its clusters
			// claimed (a RemoveBitmap frees them). Its table may be
			// of another disk size (a crash after a resize): QEMU
			// checks that only for the bitmaps it loads.
			if err := im.loadBitmapLocked(b, set.size, claim, false); err != nil {
				return nil, err
			}
			continue
		}
		if err := im.loadBitmapLocked(b, set.size, claim, true); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// unmaintainable says why the bitmap of directory entry e, on a disk of
// size bytes in clusters of cs, is not one the engine maintains, or ""
// if it is. QEMU refuses to open an image with such a bitmap
// (check_dir_entry, load_bitmap): a type or flag it does not know, extra
// data, a granularity out of its range, a table past its bounds, or,
// for a bitmap not IN_USE, a table of another size than the disk's.
func unmaintainable(e format.BitmapEntry, size, cs uint64) string {
	switch {
	case e.Type != format.BitmapTypeDirty:
		return fmt.Sprintf("type %d", e.Type)
	case e.Flags&^format.BitmapFlagsKnown != 0:
		return fmt.Sprintf("flags 0x%x", e.Flags)
	case e.ExtraDataSize != 0:
		return fmt.Sprintf("%d bytes of extra data", e.ExtraDataSize)
	case e.GranularityBits < format.MinBitmapGranularityBits, e.GranularityBits > format.MaxBitmapGranularityBits:
		return fmt.Sprintf("granularity bits %d", e.GranularityBits)
	case uint64(e.TableSize) > maxBitmapTable, uint64(e.TableSize)*cs > maxBitmapPhys:
		return fmt.Sprintf("a table of %d entries, past QEMU's bounds", e.TableSize)
	case e.Flags&format.BitmapInUse == 0 && uint64(e.TableSize) != format.BitmapTableSize(size, e.GranularityBits, cs):
		return fmt.Sprintf("a table of %d entries for %d", e.TableSize, format.BitmapTableSize(size, e.GranularityBits, cs))
	}
	return ""
}

// loadBitmapLocked claims b's table and data clusters (b.own) and, with
// bits, reads them into b.bits, one cluster at a time (no second copy
// of a bitmap of up to maxBitmapPhys bytes).
func (im *Image) loadBitmapLocked(b *liveBitmap, size uint64, claim func(format.HostOff, uint64) error, bits bool) error {
	cs := im.g.ClusterSize
	gran := uint64(1) << b.e.GranularityBits
	b.enabled.Store(b.e.Flags&format.BitmapAuto != 0)
	var loaded *bitWords
	if bits {
		loaded = newBitWords((size + gran - 1) / gran)
	}
	if b.e.TableSize > 0 {
		tlen := uint64(b.e.TableSize) * format.TableEntrySize
		if err := claim(b.e.TableOffset, tlen); err != nil {
			return err
		}
		b.own = append(b.own, im.clustersOf(b.e.TableOffset, tlen)...)
		tb := block.AlignedBuf(int((tlen+cs-1)&^(cs-1)), im.memAlign)
		if err := im.readAtLocked(tb, b.e.TableOffset); err != nil {
			return err
		}
		cbuf := block.AlignedBuf(int(cs), im.memAlign)
		wpc := cs / 8 // words per data cluster
		for i := uint64(0); i < uint64(b.e.TableSize); i++ {
			te := binary.BigEndian.Uint64(tb[i*8:])
			off, err := format.BitmapDataCluster(te, &im.g)
			if err != nil {
				return err
			}
			var lo, hi uint64 // its words
			if bits {
				lo, hi = min(i*wpc, loaded.nwords()), min((i+1)*wpc, loaded.nwords())
			}
			switch {
			case off != 0:
				if err := claim(off, cs); err != nil {
					return err
				}
				b.own = append(b.own, off)
				if !bits {
					continue
				}
				if err := im.readAtLocked(cbuf, off); err != nil {
					return err
				}
				for w := lo; w < hi; w++ {
					loaded.word(w).Store(binary.LittleEndian.Uint64(cbuf[(w-lo)*8:]))
				}
			case te&format.BitmapAllOnes != 0:
				for w := lo; w < hi; w++ {
					loaded.word(w).Store(^uint64(0))
				}
			}
		}
	}
	if loaded != nil {
		// Bits past the end of the disk, which QEMU ignores, are
		// dropped: a growth would show them.
		loaded.clearFrom(loaded.nbits)
		b.bits.Store(loaded)
	}
	return nil
}

// clustersOf lists the clusters of [off, off+n).
func (im *Image) clustersOf(off format.HostOff, n uint64) []format.HostOff {
	var out []format.HostOff
	for o := uint64(0); o < n; o += im.g.ClusterSize {
		out = append(out, off+format.HostOff(o))
	}
	return out
}

// writeBitmapDirLocked writes the directory in place with each entry's
// flags as flags says (and its table as b.e says): its bytes, not its
// clusters (writeTable). A write torn between sectors leaves each 4-byte
// field old or new.
func (im *Image) writeBitmapDirLocked(set *bitmapSet, flags func(*liveBitmap) uint32) error {
	for _, b := range set.bms {
		e := b.e
		if b.consistent() {
			e.Flags = flags(b)
		}
		format.PutBitmapEntry(set.dir, e)
	}
	return im.writeTable(set.dir, set.ext.DirSize, set.ext.DirOffset)
}

// storeBitmapsLocked writes the maintained bitmaps back at Close, after
// its flush (Q22): each changed bitmap goes to new clusters, which are
// durable, with their counts, before a new directory names them (still
// IN_USE) and the header names it (never the old directory rewritten
// with new tables: a torn write could pair a table's offset and size
// wrongly); its old clusters are freed once that is durable; then
// IN_USE goes (in place: a flags field, in one sector). A crash or a failure on the way leaves bitmaps IN_USE (stale
// for QEMU) and clusters leaked, never a bitmap marked valid that
// misses a write.
func (im *Image) storeBitmapsLocked() error {
	set := im.bitmaps.Load()
	if !set.maintains() {
		return nil // none, or only bitmaps kept IN_USE: nothing to store
	}
	im.bitmaps.Store(nil)
	// No guest write may land once the bits are taken, or a bitmap
	// stored as valid misses it: an overwrite in place takes no lock
	// (Close only drained allocations). New writes are refused (Close
	// sets closed next) and those in flight, which marked before they
	// started, are waited for (the writers gate, Q18); if they do not
	// leave, the bitmaps stay IN_USE.
	im.state.Store(im.state.Load() | stNoWrite)
	if !im.writers.syncWithin(im.idleWaitOr()) {
		return errBitmapWritersBusy
	}
	var olds []format.HostOff
	moved := false
	for _, b := range set.bms {
		if !b.consistent() || !b.changed.Load() {
			continue
		}
		off, n, err := im.writeBitmapLocked(b, set.size)
		if err != nil {
			return err
		}
		olds = append(olds, b.own...)
		b.e.TableOffset, b.e.TableSize = off, n
		moved = true
	}
	if moved {
		if err := im.flushLocked(); err != nil {
			return err
		}
		// A new directory, which the header then names (QEMU's
		// update_ext_header_and_dir), not the old one rewritten in
		// place: an entry's table offset and size may lie in two
		// sectors, and a write torn between them would name the new
		// table with the old size (after a shrink, clusters past the
		// table read as its entries: qemu-img check finds corruption,
		// a writable open refuses the image). Still IN_USE.
		next := set.with(set.bms)
		err := im.writeNewDirLocked(set, next)
		im.bitmaps.Store(nil) // writeNewDirLocked may have published next: Close maintains no more
		if err != nil {
			return err
		}
		set = next
		for _, o := range olds {
			if err := im.freeClustersLocked(o, 1); err != nil {
				return err
			}
		}
	}
	if err := im.writeBitmapDirLocked(set, func(b *liveBitmap) uint32 { return b.e.Flags &^ format.BitmapInUse }); err != nil {
		return err
	}
	return im.flushLocked()
}

// writeBitmapLocked writes b's bits, for a disk of size bytes, to new
// clusters, a data cluster for each part that is not all zeros, and
// returns its new table's offset and entries. b.e is left naming the
// table on the media until the caller names the new one (after a
// resize, of another size).
func (im *Image) writeBitmapLocked(b *liveBitmap, size uint64) (format.HostOff, uint32, error) {
	cs := im.g.ClusterSize
	n := format.BitmapTableSize(size, b.e.GranularityBits, cs)
	if n == 0 {
		return 0, 0, nil
	}
	v := b.bits.Load()
	tlen := (n*format.TableEntrySize + cs - 1) &^ (cs - 1)
	tb := block.AlignedBuf(int(tlen), im.memAlign)
	cbuf := block.AlignedBuf(int(cs), im.memAlign)
	for i := uint64(0); i < n; i++ {
		// One cluster of the bitmap at a time (no copy of it all).
		v.bytesAt(cbuf, i*cs)
		if allZero(cbuf) {
			continue
		}
		off, _, err := im.allocClustersLocked(1)
		if err != nil {
			return 0, 0, err
		}
		if err := im.writeMeta(cbuf, off); err != nil {
			return 0, 0, err
		}
		binary.BigEndian.PutUint64(tb[i*8:], uint64(off))
	}
	toff, _, err := im.allocClustersLocked(tlen / cs)
	if err != nil {
		return 0, 0, err
	}
	if err := im.writeTable(tb, n*format.TableEntrySize, toff); err != nil {
		return 0, 0, err
	}
	return toff, uint32(n), nil
}
