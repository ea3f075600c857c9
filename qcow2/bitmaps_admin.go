package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// Managing persistent dirty bitmaps (qemu-img bitmap): adding and
// removing one writes a new directory, which the header then names
// (Q22's order: the directory and the new bitmap's table are durable
// before the header names them, the old directory and a removed
// bitmap's clusters are freed after); clearing, enabling, disabling and
// merging change the maintained bitmap, which Close stores.

// ErrNoBitmap is returned for a bitmap name the image does not have.
var ErrNoBitmap = errors.New("dirty bitmap not found")

// BitmapInfo describes one persistent dirty bitmap.
type BitmapInfo struct {
	Name        string
	Granularity uint64
	Enabled     bool // AUTO: writes set its bits
	InUse       bool // IN_USE when the image was opened: inconsistent
}

// Bitmaps lists the image's persistent dirty bitmaps: the maintained
// ones of an image opened writable, or those on the media of one opened
// read-only (none where the autoclear bit says they are stale, or where
// they cannot be read as this engine maintains them).
func (im *Image) Bitmaps() []BitmapInfo {
	set := im.bitmaps.Load()
	if set == nil {
		im.mu.Lock()
		if im.ro && im.hdr.AutoclearFeatures&format.AutoclearBitmaps != 0 {
			set, _ = im.readBitmapsLocked()
		}
		im.mu.Unlock()
	}
	if set == nil {
		return nil
	}
	var out []BitmapInfo
	for _, b := range set.bms {
		out = append(out, BitmapInfo{Name: b.e.Name, Granularity: 1 << b.e.GranularityBits,
			Enabled: b.e.Flags&format.BitmapAuto != 0, InUse: !b.consistent()})
	}
	return out
}

// editBitmapsLocked returns the set to change: the maintained one, or a
// new empty one for an image without valid bitmaps.
func (im *Image) editBitmapsLocked() (*bitmapSet, error) {
	if err := im.writableLocked(); err != nil {
		return nil, err
	}
	if im.hdr.Version < 3 {
		return nil, fmt.Errorf("%w: Cannot store dirty bitmaps in qcow2 v2 files", ErrUnsupported)
	}
	if set := im.bitmaps.Load(); set != nil {
		return set, nil
	}
	if im.hdr.AutoclearFeatures&format.AutoclearBitmaps != 0 {
		return nil, fmt.Errorf("%w: the image's dirty bitmaps are not maintained (an unsupported bitmap, a downgrade or a failed resize)", ErrUnsupported)
	}
	return &bitmapSet{size: im.hdr.Size}, nil
}

func (set *bitmapSet) find(name string) (int, *liveBitmap) {
	for i, b := range set.bms {
		if b.e.Name == name {
			return i, b
		}
	}
	return -1, nil
}

// findUsable is find for an operation on the bitmap's bits.
func (set *bitmapSet) findUsable(name string) (*liveBitmap, error) {
	_, b := set.find(name)
	if b == nil {
		return nil, fmt.Errorf("%w: '%s'", ErrNoBitmap, name)
	}
	if !b.consistent() {
		return nil, &BitmapInconsistentError{Name: name}
	}
	return b, nil
}

// AddBitmap adds an empty persistent dirty bitmap of the given
// granularity (a power of two from 512 bytes to 2 GiB), enabled or not.
func (im *Image) AddBitmap(name string, granularity uint64, enabled bool) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	set, err := im.editBitmapsLocked()
	if err != nil {
		return err
	}
	switch {
	case len(name) == 0:
		return fmt.Errorf("%w: a bitmap name is empty", ErrUnsupported)
	case len(name) > 1023:
		return fmt.Errorf("%w: Name length exceeds maximum (1023 characters)", ErrUnsupported)
	case granularity < 512 || granularity > 1<<31 || granularity&(granularity-1) != 0:
		return fmt.Errorf("%w: Granularity must be power of 2 and at least 512", ErrUnsupported)
	case len(set.bms) >= 65535:
		return fmt.Errorf("%w: too many bitmaps", ErrUnsupported)
	}
	if _, b := set.find(name); b != nil {
		return fmt.Errorf("%w: Bitmap already exists: %s", ErrUnsupported, name)
	}
	cs := im.g.ClusterSize
	if b := ((set.size+granularity-1)/granularity + 7) / 8; b > maxBitmapPhys || b > maxBitmapTable*cs {
		// QEMU's check_constraints_on_bitmap: QEMU would not open the
		// image with it (and the engine would not maintain it).
		return fmt.Errorf("%w: Too much space will be occupied by the bitmap. Use larger granularity", ErrUnsupported)
	}
	gbits := uint8(bits.TrailingZeros64(granularity))
	n := format.BitmapTableSize(set.size, gbits, cs)
	if n == 0 {
		// An empty disk: a table of no entries, which QEMU refuses
		// to open the image with (check_dir_entry).
		return fmt.Errorf("%w: a bitmap cannot cover an empty disk", ErrUnsupported)
	}
	flags := uint32(format.BitmapInUse) // maintained from now: stored at Close
	if enabled {
		flags |= format.BitmapAuto
	}
	b := &liveBitmap{e: format.BitmapEntry{TableSize: uint32(n), Name: name, Flags: flags,
		Type: format.BitmapTypeDirty, GranularityBits: gbits}}
	b.bits.Store(newBitWords((set.size + granularity - 1) / granularity))
	b.enabled.Store(enabled)
	if n > 0 {
		tlen := (n*format.TableEntrySize + cs - 1) &^ (cs - 1)
		off, _, err := im.allocClustersLocked(tlen / cs)
		if err != nil {
			return err
		}
		if err := im.writeTable(block.AlignedBuf(int(tlen), im.memAlign), n*format.TableEntrySize, off); err != nil {
			im.freeClustersLocked(off, tlen/cs)
			return err
		}
		b.e.TableOffset = off
		b.own = im.clustersOf(off, tlen)
	}
	next := set.with(append(append([]*liveBitmap(nil), set.bms...), b))
	if err := im.writeNewDirLocked(set, next); err != nil {
		if !im.writesLost {
			// Nothing names the table: the header write was not tried
			// (after it, the media may name it, and writes are lost).
			for _, o := range b.own {
				im.freeClustersLocked(o, 1)
			}
		}
		return err
	}
	return nil
}

// RemoveBitmap removes a bitmap and frees its clusters.
func (im *Image) RemoveBitmap(name string) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	set, err := im.editBitmapsLocked()
	if err != nil {
		return err
	}
	i, b := set.find(name)
	if b == nil {
		return fmt.Errorf("%w: '%s'", ErrNoBitmap, name)
	}
	rest := append(append([]*liveBitmap(nil), set.bms[:i]...), set.bms[i+1:]...)
	if err := im.writeNewDirLocked(set, set.with(rest)); err != nil {
		return err
	}
	// Durable: no directory names it, so its clusters (b.own, claimed
	// by loadBitmapLocked, an IN_USE bitmap's too) are freed, as QEMU
	// frees them.
	for _, o := range b.own {
		if err := im.freeClustersLocked(o, 1); err != nil {
			return err
		}
	}
	return nil
}

// ClearBitmap clears every bit of a bitmap.
func (im *Image) ClearBitmap(name string) error {
	return im.editBitmap(name, func(b *liveBitmap) error {
		v := b.bits.Load()
		for w := range v.nwords() {
			v.word(w).Store(0)
		}
		b.changed.Store(true)
		return nil
	})
}

// EnableBitmap makes writes set a bitmap's bits (on) or not.
func (im *Image) EnableBitmap(name string, on bool) error {
	return im.editBitmap(name, func(b *liveBitmap) error {
		b.e.Flags &^= format.BitmapAuto
		if on {
			b.e.Flags |= format.BitmapAuto
		}
		b.enabled.Store(on)
		return nil
	})
}

// MergeBitmap sets in bitmap dst every granule that bitmap srcName of
// src (im itself, or another image) has dirty.
func (im *Image) MergeBitmap(dst string, src *Image, srcName string) error {
	var sg uint8
	var sbits []uint64
	var err error
	if src != im {
		// The target first, as QEMU looks them up: a missing target is
		// named even when the source is missing too.
		if err := im.editBitmap(dst, func(*liveBitmap) error { return nil }); err != nil {
			return err
		}
		if sg, sbits, err = src.bitmapBits(srcName); err != nil {
			return err
		}
	}
	return im.editBitmap(dst, func(b *liveBitmap) error {
		if src == im {
			set := im.bitmaps.Load()
			s, err := set.findUsable(srcName)
			if err != nil {
				return err
			}
			sg, sbits = s.e.GranularityBits, s.snapshot()
		} else if ss, ds := src.vsize.Load(), im.vsize.Load(); ss != ds {
			// As QEMU (hbitmap_can_merge): granules of other sizes
			// merge, disks of other sizes do not.
			return fmt.Errorf("%w: Bitmaps are of different sizes (destination size is %d, source size is %d) and can't be merged",
				ErrUnsupported, ds, ss)
		}
		gran := uint64(1) << sg
		for w, v := range sbits {
			for v != 0 {
				i := uint64(w)*64 + uint64(bits.TrailingZeros64(v))
				v &= v - 1
				b.mark(i*gran, gran)
			}
		}
		return nil
	})
}

// editBitmap runs fn on the maintained bitmap name under mu.
func (im *Image) editBitmap(name string, fn func(*liveBitmap) error) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	set, err := im.editBitmapsLocked()
	if err != nil {
		return err
	}
	b, err := set.findUsable(name)
	if err != nil {
		return err
	}
	return fn(b)
}

// snapshot copies the bits.
func (b *liveBitmap) snapshot() []uint64 {
	v := b.bits.Load()
	out := make([]uint64, v.nwords())
	for w := range out {
		out[w] = v.word(uint64(w)).Load()
	}
	return out
}

// bitmapBits reads bitmap name of an image that does not maintain it
// (opened read-only, as a merge's source), or copies a maintained one.
func (im *Image) bitmapBits(name string) (uint8, []uint64, error) {
	if set := im.bitmaps.Load(); set != nil {
		b, err := set.findUsable(name)
		if err != nil {
			return 0, nil, err
		}
		return b.e.GranularityBits, b.snapshot(), nil
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.hdr.AutoclearFeatures&format.AutoclearBitmaps == 0 {
		return 0, nil, fmt.Errorf("%w: '%s'", ErrNoBitmap, name)
	}
	set, err := im.readBitmapsLocked()
	if err != nil {
		return 0, nil, err
	}
	if set == nil {
		return 0, nil, fmt.Errorf("%w: '%s'", ErrNoBitmap, name)
	}
	b, err := set.findUsable(name)
	if err != nil {
		return 0, nil, err
	}
	return b.e.GranularityBits, b.snapshot(), nil
}

// with is a copy of set holding bms, its directory encoded anew (not
// yet placed: writeNewDirLocked).
func (set *bitmapSet) with(bms []*liveBitmap) *bitmapSet {
	return &bitmapSet{bms: bms, size: set.size}
}

// writeNewDirLocked writes next's directory to new clusters and makes
// the header name it; then next is the set maintained (nil without
// bitmaps, whose extension and autoclear bit go), and old's directory
// is freed.
func (im *Image) writeNewDirLocked(old, next *bitmapSet) error {
	cs := im.g.ClusterSize
	for _, b := range next.bms {
		if b.e.ExtraDataSize != 0 {
			return fmt.Errorf("%w: bitmap %q has extra data", ErrUnsupported, b.e.Name)
		}
	}
	oldHdr := *im.hdr
	oldExts := append([]format.Extension(nil), im.hdr.Extensions...)
	// Each entry's place in next's directory: b.e.At takes it only once
	// the header names that directory. Until then b.e.At is the place in
	// old's (the bitmaps are shared), where a Close after a failure here
	// writes them (writeBitmapDirLocked): a RemoveBitmap's shift would
	// make it write each later entry over the one before.
	ats := make([]uint64, len(next.bms))
	if len(next.bms) == 0 {
		im.hdr.SetExtension(format.ExtBitmaps, nil)
		im.hdr.AutoclearFeatures &^= format.AutoclearBitmaps
	} else {
		var dir []byte
		for i, b := range next.bms {
			ats[i] = uint64(len(dir))
			// As on the media (Q22): a maintained bitmap stays IN_USE
			// until Close stores it, its table the one stored (a
			// resize changes it at Close, writeBitmapLocked).
			e := b.e
			e.At = ats[i]
			if b.consistent() {
				e.Flags |= format.BitmapInUse
			}
			dir = appendBitmapEntry(dir, e)
		}
		dlen := (uint64(len(dir)) + cs - 1) &^ (cs - 1)
		off, _, err := im.allocClustersLocked(dlen / cs)
		if err != nil {
			return err
		}
		buf := block.AlignedBuf(int(dlen), im.memAlign)
		copy(buf, dir)
		if err := im.writeTable(buf, uint64(len(dir)), off); err != nil {
			im.freeClustersLocked(off, dlen/cs)
			return err
		}
		if err := im.flushLocked(); err != nil {
			return err
		}
		next.dir = buf
		next.ext = format.BitmapsExt{N: uint32(len(next.bms)), DirSize: uint64(len(dir)), DirOffset: off}
		ext := make([]byte, 24)
		binary.BigEndian.PutUint32(ext, next.ext.N)
		binary.BigEndian.PutUint64(ext[8:], next.ext.DirSize)
		binary.BigEndian.PutUint64(ext[16:], uint64(off))
		im.hdr.SetExtension(format.ExtBitmaps, ext)
		im.hdr.AutoclearFeatures |= format.AutoclearBitmaps
	}
	err := im.writeHeader()
	if err == nil {
		err = im.dev.Flush()
	}
	if err != nil {
		// The header may name either directory: both stay, and writes
		// are refused (Q4).
		im.hdr.AutoclearFeatures, im.hdr.Extensions = oldHdr.AutoclearFeatures, oldExts
		im.loseWritesLocked(fmt.Errorf("qcow2: writing the bitmap directory: %w", err))
		return err
	}
	for i, b := range next.bms {
		b.e.At = ats[i]
	}
	// The new directory published before the old one's clusters are
	// free: the overlap checks (bitmapDirOverlap) must not take a
	// cluster handed out again for the old directory.
	if len(next.bms) == 0 {
		im.bitmaps.Store(nil)
	} else {
		im.bitmaps.Store(next)
	}
	if old.ext.DirSize > 0 {
		for _, o := range im.clustersOf(old.ext.DirOffset, old.ext.DirSize) {
			if err := im.freeClustersLocked(o, 1); err != nil {
				return err
			}
		}
	}
	return nil
}

// appendBitmapEntry appends e's directory entry (no extra data) to dir,
// padded to 8 bytes.
func appendBitmapEntry(dir []byte, e format.BitmapEntry) []byte {
	var h [24]byte
	binary.BigEndian.PutUint64(h[0:], uint64(e.TableOffset))
	binary.BigEndian.PutUint32(h[8:], e.TableSize)
	binary.BigEndian.PutUint32(h[12:], e.Flags)
	h[16] = e.Type
	h[17] = e.GranularityBits
	binary.BigEndian.PutUint16(h[18:], uint16(len(e.Name)))
	dir = append(dir, h[:]...)
	dir = append(dir, e.Name...)
	for len(dir)%8 != 0 {
		dir = append(dir, 0)
	}
	return dir
}

// bitmapForRead is bitmap name as DirtyRun reads it: the maintained one,
// or on an image opened read-only the one on the media, read once.
func (im *Image) bitmapForRead(name string) (*liveBitmap, error) {
	set := im.bitmaps.Load()
	if set == nil {
		set = im.roBitmaps.Load()
	}
	if set == nil {
		im.mu.Lock()
		if im.ro && im.hdr.AutoclearFeatures&format.AutoclearBitmaps != 0 {
			if s, err := im.readBitmapsLocked(); err == nil && s != nil {
				im.roBitmaps.Store(s)
				set = s
			}
		}
		im.mu.Unlock()
	}
	if set == nil {
		return nil, fmt.Errorf("%w: '%s'", ErrNoBitmap, name)
	}
	return set.findUsable(name)
}

// BitmapUsable says why bitmap name cannot be read (DirtyRun): ErrNoBitmap,
// or ErrUnsupported for one that is inconsistent (IN_USE when opened).
func (im *Image) BitmapUsable(name string) error {
	_, err := im.bitmapForRead(name)
	return err
}

// DirtyRun reports whether guest offset off is dirty in bitmap name, and
// the length of the run of that state from off, at most n (off and n
// inside the disk): a maintained bitmap as it is now, a read-only
// image's as on the media.
func (im *Image) DirtyRun(name string, off, n int64) (bool, int64, error) {
	b, err := im.bitmapForRead(name)
	if err != nil {
		return false, 0, err
	}
	if off < 0 || n <= 0 {
		return false, 0, fmt.Errorf("%w: dirty run at %d of %d bytes", ErrUnsupported, off, n)
	}
	v := b.bits.Load()
	g := uint(b.e.GranularityBits)
	first := uint64(off) >> g
	if first >= v.nbits {
		return false, n, nil // past the bitmap: clean
	}
	bit := v.bit
	dirty := bit(first)
	last := min((uint64(off)+uint64(n)-1)>>g, v.nbits-1)
	i := first + 1
	for i <= last && bit(i) == dirty {
		if i%64 == 0 && i+63 <= last {
			// A whole word of the same state at once.
			w, want := v.word(i/64).Load(), uint64(0)
			if dirty {
				want = ^uint64(0)
			}
			if w == want {
				i += 64
				continue
			}
		}
		i++
	}
	end := min(int64(i<<g), off+n)
	return dirty, end - off, nil
}
