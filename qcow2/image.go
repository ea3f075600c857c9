package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/cache"
	"github.com/qring/qring/internal/invariants"
	"github.com/qring/qring/qcow2/format"
	"github.com/qring/qring/sched"
)

var be = binary.BigEndian

// Image is an open qcow2 image.
type Image struct {
	dev        block.Device
	ownDev     bool
	path       string
	backing    block.Device
	ownBacking bool
	bsize      int64 // backing device size
	bzero      zeroProber

	hdr  *format.Header
	g    format.Geometry
	ro   bool
	opts Options
	dcap block.Caps
	// metaAlign is the alignment for direct metadata writes (L1 and
	// reftable entries, header): the device's request alignment.
	metaAlign int64
	memAlign  int
	prealloc  bool
	lazy      bool
	// pinfo is the preallocation strategy chosen at open (immutable:
	// Metrics reads it without mu; ahead may drop to 0 later).
	pinfo PreallocInfo
	space hostSpace // the file's space past what refcounts describe (S1-S4)

	mu sync.Mutex
	// l1 is the active L1 table for holders of mu; l1p points at the
	// same table for lock-free readers (growL1 replaces both), and
	// l1Off/l1Len mirror its place (overlap checks).
	l1           []uint64
	l1p          atomic.Pointer[[]uint64]
	l1Off, l1Len atomic.Uint64
	reftable     []uint64
	l2c, rbc     *cache.Cache
	sliceSize    uint64
	freeIdx      uint64 // first-fit search start (cluster index)
	// vsize mirrors hdr.Size for lock-free readers.
	vsize atomic.Uint64
	// state mirrors closed/ro/corrupt for the lock-free data path.
	state atomic.Uint32
	// rtOff/rtLen mirror the refcount table's place (overlap checks).
	rtOff, rtLen atomic.Uint64
	snapshots    []format.Snapshot
	dirtySet     bool // dirty bit written (lazy refcounts)
	corrupt      bool
	corruptCause error // what markCorrupt was told
	closed       bool

	meta metaSet // roles of L2 and refcount block clusters (overlap checks)
	// allocs registers the guest clusters under allocation (Q7), each
	// with its allocation's state (inflight.go, Q10).
	allocs sched.ClusterLocks[allocState]
	gate   writeGate // lock-free overwrites vs freeing (Q12)
	// linkFault, if set (tests), fails the L2 link of new clusters.
	linkFault func() error
	c         counters
}

var (
	_ block.Device = (*Image)(nil)
	_ io.ReaderAt  = (*Image)(nil)
	_ io.WriterAt  = (*Image)(nil)
)

// zeroProber is implemented by backing devices that can tell cheaply
// whether a range reads as zeros (an *Image).
type zeroProber interface {
	IsZeroFast(off, n int64) bool
}

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
// resolved against the working directory. The Image does not close dev.
func OpenDevice(dev block.Device, o Options) (*Image, error) {
	return open(dev, "", o)
}

func open(dev block.Device, path string, o Options) (*Image, error) {
	im := &Image{dev: dev, path: path, opts: o, ro: o.ReadOnly, dcap: dev.Caps()}
	im.metaAlign = im.dcap.Align
	if im.metaAlign < 8 {
		im.metaAlign = 8
	}
	im.memAlign = im.dcap.MemAlign
	if im.memAlign < block.DefaultMemAlign {
		im.memAlign = block.DefaultMemAlign
	}
	im.prealloc = o.Prealloc != "off"
	if im.prealloc && !o.ReadOnly && o.PreallocSize >= 0 && im.dcap.ZeroFlags&block.Allocate != 0 {
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
		return nil, err
	}
	im.pinfo = PreallocInfo{On: im.prealloc, Ahead: im.space.ahead, AheadAlign: im.space.align}
	if im.space.ahead > 0 {
		im.pinfo.Fill, im.pinfo.FillReason = fillMode, fillWhy
	}
	fsize, err := dev.Size()
	if err != nil {
		return nil, err
	}
	// Cluster 0 holds the header, extensions and backing name; read the
	// largest possible cluster (or the file) and let the parser check.
	hb := block.AlignedBuf(int(min(max(fsize, 512), 1<<format.MaxClusterBits)+511)&^511, im.memAlign)
	if err := block.ReadAt(dev, hb, 0); err != nil {
		return nil, fmt.Errorf("qcow2: reading header: %w", err)
	}
	h, err := format.ParseHeader(hb[:min(int64(len(hb)), max(fsize, 0))])
	if err != nil {
		return nil, err
	}
	im.hdr = h
	im.g = format.NewGeometry(h.ClusterBits, h.RefcountOrder, h.ExtendedL2())
	g := &im.g
	cs := g.ClusterSize
	switch {
	case h.CryptMethod != format.CryptNone:
		return nil, unsupportedf("crypt_method", uint64(h.CryptMethod), "encrypted images are not supported")
	case h.IncompatibleFeatures&format.IncompatDataFile != 0:
		return nil, unsupportedf("incompatible_features", format.IncompatDataFile, "external data files are not supported")
	case h.ExtendedL2():
		return nil, unsupportedf("incompatible_features", format.IncompatExtendedL2, "extended L2 entries are not supported")
	}
	if h.IncompatibleFeatures&format.IncompatCorrupt != 0 && !o.Repair {
		im.ro = true // QEMU refuses r/w; we open read-only (Q9)
	}
	im.lazy = h.CompatibleFeatures&format.CompatLazyRefcounts != 0
	// Tables must lie inside the file (a cluster of slack for the last).
	limit := uint64(fsize) + cs
	chk := func(field string, off, n uint64) error {
		if off > limit || n > limit || off+n > limit {
			return corruptf(field, off, "table of %d bytes runs past the end of the file (%d bytes)", n, fsize)
		}
		return nil
	}
	if err := chk("refcount_table_offset", uint64(h.RefcountTableOffset), uint64(h.RefcountTableClusters)*cs); err != nil {
		return nil, err
	}
	if err := chk("l1_table_offset", uint64(h.L1TableOffset), uint64(h.L1Size)*8); err != nil {
		return nil, err
	}
	// Refcount table.
	rt := make([]byte, uint64(h.RefcountTableClusters)*cs)
	if err := block.ReadAt(dev, rt, int64(h.RefcountTableOffset)); err != nil {
		return nil, fmt.Errorf("qcow2: reading refcount table: %w", err)
	}
	im.reftable = make([]uint64, len(rt)/8)
	for i := range im.reftable {
		v := be.Uint64(rt[i*8:])
		if err := format.ValidateReftableEntry(g, v); err != nil {
			return nil, err
		}
		if v != 0 && v >= limit {
			return nil, corruptf("refcount_table_entry", v, "refcount block %d past the end of the file", i)
		}
		im.reftable[i] = v
	}
	// L1 table.
	l1b := make([]byte, uint64(h.L1Size)*8)
	if err := block.ReadAt(dev, l1b, int64(h.L1TableOffset)); err != nil {
		return nil, fmt.Errorf("qcow2: reading L1 table: %w", err)
	}
	im.l1 = make([]uint64, h.L1Size)
	for i := range im.l1 {
		e := format.L1Entry(be.Uint64(l1b[i*8:]))
		if err := e.Validate(g); err != nil {
			return nil, err
		}
		if off := uint64(e.Offset()); off != 0 && off >= limit {
			return nil, corruptf("l1_entry", uint64(e), "L2 table %d past the end of the file", i)
		}
		im.l1[i] = uint64(e)
	}
	im.setL1(im.l1, uint64(h.L1TableOffset))
	im.rtOff.Store(uint64(h.RefcountTableOffset))
	im.rtLen.Store(uint64(h.RefcountTableClusters) * cs)
	if err := im.overlapCheckStatic(); err != nil {
		return nil, err
	}
	// Snapshots: parsed for Check and so that writes never corrupt them.
	if h.NbSnapshots > 0 {
		if err := chk("snapshots_offset", uint64(h.SnapshotsOffset), 0); err != nil {
			return nil, err
		}
		n := min(uint64(h.NbSnapshots)*1200, uint64(fsize)-min(uint64(fsize), uint64(h.SnapshotsOffset)))
		sb := make([]byte, n)
		if err := block.ReadAt(dev, sb, int64(h.SnapshotsOffset)); err != nil {
			return nil, err
		}
		snaps, _, err := format.ParseSnapshots(sb, h.NbSnapshots)
		if err != nil {
			return nil, err
		}
		for _, s := range snaps {
			if !g.Aligned(uint64(s.L1TableOffset)) {
				return nil, corruptf("snapshot_l1_table_offset", uint64(s.L1TableOffset), "not cluster aligned")
			}
		}
		im.snapshots = snaps
	}
	im.initSpace(uint64(fsize))
	im.vsize.Store(h.Size)
	im.syncState()
	if err := im.initCaches(); err != nil {
		return nil, err
	}
	// Backing file.
	if err := im.openBacking(); err != nil {
		im.closeCaches()
		return nil, err
	}
	if !im.ro {
		if err := im.openWritable(); err != nil {
			im.closeCaches()
			im.closeBacking()
			return nil, err
		}
	}
	return im, nil
}

// openWritable applies the writable-open rules: clear unknown autoclear
// bits, and rebuild refcounts of a dirty image before the first write.
func (im *Image) openWritable() error {
	h := im.hdr
	rewrite := false
	if unk := h.AutoclearFeatures &^ format.AutoclearKnown; unk != 0 {
		h.AutoclearFeatures &^= unk
		rewrite = true
	}
	// We do not maintain bitmaps: clear the consistency bit so that QEMU
	// does not trust them (QEMU does the same for unknown users).
	if h.AutoclearFeatures&format.AutoclearBitmaps != 0 {
		h.AutoclearFeatures &^= format.AutoclearBitmaps
		rewrite = true
	}
	if rewrite {
		if err := im.writeHeader(); err != nil {
			return err
		}
	}
	if h.IncompatibleFeatures&format.IncompatDirty != 0 {
		// Refcounts may be stale (Q8): rebuild them from L1/L2 now.
		if _, err := im.Check(CheckOptions{Repair: RepairAll}); err != nil {
			return fmt.Errorf("qcow2: repairing dirty image: %w", err)
		}
		h.IncompatibleFeatures &^= format.IncompatDirty
		if err := im.writeHeader(); err != nil {
			return err
		}
		if err := im.dev.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func (im *Image) initCaches() error {
	g := &im.g
	cs := g.ClusterSize
	full := uint64(len(im.l1)) * cs // bytes of L2 covering the whole image
	l2size := im.opts.L2CacheSize
	if l2size <= 0 {
		l2size = int64(min(full, 32<<20))
	}
	entry := uint64(im.opts.L2CacheEntrySize)
	if entry == 0 {
		if uint64(l2size) >= full {
			entry = cs
		} else {
			entry = min(cs, 4096)
		}
	}
	if entry < 512 || entry > cs || entry&(entry-1) != 0 {
		return fmt.Errorf("qcow2: l2-cache-entry-size %d must be a power of two in [512, %d]", entry, cs)
	}
	if uint64(l2size) < 2*entry {
		l2size = int64(2 * entry)
	}
	im.sliceSize = entry
	var err error
	im.l2c, err = cache.New(im.dev, cache.Config{Name: "l2", TableSize: int(entry), MaxBytes: l2size,
		MemAlign: im.memAlign, CleanInterval: im.opts.CacheCleanInterval, Before: im.overlapCheckL2Write})
	if err != nil {
		return err
	}
	rcsize := im.opts.RefcountCacheSize
	if rcsize <= 0 {
		rcsize = int64(4 * cs)
	}
	if rcsize < int64(2*cs) {
		rcsize = int64(2 * cs)
	}
	im.rbc, err = cache.New(im.dev, cache.Config{Name: "refcount", TableSize: int(cs), MaxBytes: rcsize,
		MemAlign: im.memAlign, CleanInterval: im.opts.CacheCleanInterval, Before: im.overlapCheckRefblockWrite})
	if err != nil {
		im.l2c.Close()
		return err
	}
	return nil
}

func (im *Image) closeCaches() {
	if im.l2c != nil {
		im.l2c.Close()
	}
	if im.rbc != nil {
		im.rbc.Close()
	}
}

func (im *Image) openBacking() error {
	h := im.hdr
	if im.opts.Backing != nil {
		im.backing = im.opts.Backing
	} else if h.BackingFile != "" && !im.opts.NoBacking {
		name := h.BackingFile
		if !filepath.IsAbs(name) && im.path != "" {
			name = filepath.Join(filepath.Dir(im.path), name)
		}
		op := im.opts.Opener
		if op == nil {
			op = DefaultOpener
		}
		d, err := OpenFormat(name, h.BackingFormat, Options{ReadOnly: true, Opener: op,
			L2CacheSize: im.opts.L2CacheSize, CacheCleanInterval: im.opts.CacheCleanInterval})
		if err != nil {
			return fmt.Errorf("qcow2: opening backing file %q: %w", h.BackingFile, err)
		}
		im.backing = d
		im.ownBacking = true
	}
	if im.backing != nil {
		n, err := im.backing.Size()
		if err != nil {
			im.closeBacking()
			return err
		}
		im.bsize = n
		im.bzero, _ = im.backing.(zeroProber)
	}
	return nil
}

func (im *Image) closeBacking() {
	if im.ownBacking && im.backing != nil {
		im.backing.Close()
	}
	im.backing = nil
}

// OpenFormat opens path as format fmt ("qcow2", "raw", or "" to probe).
// A raw file is returned as the device itself.
func OpenFormat(path, fmtName string, o Options) (block.Device, error) {
	op := o.Opener
	if op == nil {
		op = DefaultOpener
	}
	if fmtName == "" {
		var err error
		fmtName, err = Probe(path)
		if err != nil {
			return nil, err
		}
	}
	switch fmtName {
	case "qcow2":
		return Open(path, o)
	case "raw":
		return op(path, o.ReadOnly)
	}
	return nil, fmt.Errorf("%w: image format %q", ErrUnsupported, fmtName)
}

// Probe returns "qcow2" if path starts with the qcow2 magic, else "raw".
func Probe(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var b [4]byte
	if n, _ := io.ReadFull(f, b[:]); n == 4 && be.Uint32(b[:]) == format.Magic {
		return "qcow2", nil
	}
	return "raw", nil
}

// Header returns a copy of the decoded header.
func (im *Image) Header() format.Header {
	im.mu.Lock()
	defer im.mu.Unlock()
	return *im.hdr
}

// Geometry returns the image geometry.
func (im *Image) Geometry() format.Geometry { return im.g }

// ReadOnly reports whether writes are refused.
func (im *Image) ReadOnly() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.ro || im.corrupt
}

// Backing returns the backing device, or nil.
func (im *Image) Backing() block.Device { return im.backing }

// Device returns the device the image is stored on (for its metrics;
// writing to it directly corrupts the image).
func (im *Image) Device() block.Device { return im.dev }

// Size is the virtual size.
func (im *Image) Size() (int64, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return 0, block.ErrClosed
	}
	return int64(im.vsize.Load()), nil
}

// Caps: Allocate and MayUnmap on v3 (zero clusters), for cluster-aligned
// ranges (ZeroAlign); guest requests need no alignment.
func (im *Image) Caps() block.Caps {
	c := block.Caps{Align: 1, MemAlign: 1, ZeroAlign: int64(im.g.ClusterSize)}
	if im.hdr.Version >= 3 {
		c.ZeroFlags = block.Allocate | block.MayUnmap
	} else {
		c.ZeroFlags = block.MayUnmap
	}
	return c
}

// Metrics returns a snapshot of the engine counters.
func (im *Image) Metrics() Metrics {
	c := &im.c
	m := Metrics{
		GuestReads: c.guestReads.Load(), GuestWrites: c.guestWrites.Load(),
		GuestBytesRead: c.guestBytesRead.Load(), GuestBytesWritten: c.guestBytesWritten.Load(),
		ClustersAllocated: c.clustersAllocated.Load(), L2TablesAllocated: c.l2TablesAllocated.Load(),
		RefblocksAllocated: c.refblocksAllocated.Load(), ReftableGrowths: c.reftableGrowths.Load(),
		COWBytes: c.cowBytes.Load(), ZeroPadBytes: c.zeroPadBytes.Load(), Fallocates: c.fallocates.Load(),
		ZeroingRefused: c.zeroingRefused.Load(), FreshSkips: c.freshSkips.Load(), AllocWaits: c.allocWaits.Load(), EarlyWrites: c.earlyWrites.Load(), Reservations: c.reservations.Load(),
		MetaWrites: c.metaWrites.Load(), Flushes: c.flushes.Load(),
		FillBytes: c.fillBytes.Load(), FillWaits: c.fillWaits.Load(), FillErrors: c.fillErrors.Load(),
		Prealloc: im.pinfo,
	}
	if im.l2c != nil {
		lm := im.l2c.Metrics()
		m.L2Hits, m.L2Misses = int64(lm.Hits), int64(lm.Misses)
		rm := im.rbc.Metrics()
		m.RefcntHits, m.RefcntMisses = int64(rm.Hits), int64(rm.Misses)
	}
	return m
}

// CacheMetrics returns the L2 and refcount cache metrics.
func (im *Image) CacheMetrics() (l2, refcount cache.Metrics) {
	return im.l2c.Metrics(), im.rbc.Metrics()
}

// writeHeader rewrites cluster 0 from im.hdr (unknown fields and
// extensions preserved, F3). Caller holds mu or is single-threaded.
func (im *Image) writeHeader() error {
	b, err := im.hdr.Encode()
	if err != nil {
		return err
	}
	buf := block.AlignedBuf(len(b), im.memAlign)
	copy(buf, b)
	im.c.metaWrites.Add(1)
	return block.WriteAt(im.dev, buf, 0)
}

// writeTableEntry writes the aligned chunk of an on-disk u64 table that
// holds entry i (QEMU writes max(8, request alignment) bytes).
func (im *Image) writeTableEntry(tableOff uint64, table []uint64, i uint64) error {
	per := uint64(im.metaAlign) / 8
	if per*8 > im.g.ClusterSize {
		per = im.g.ClusterSize / 8
	}
	first := i / per * per
	buf := block.AlignedBuf(int(per*8), im.memAlign)
	for k := uint64(0); k < per; k++ {
		if first+k < uint64(len(table)) {
			be.PutUint64(buf[k*8:], table[first+k])
		}
	}
	im.c.metaWrites.Add(1)
	return block.WriteAt(im.dev, buf, int64(tableOff+first*8))
}

// markCorrupt sets the corrupt bit (best effort) and makes the image
// read-only (Q9).
func (im *Image) markCorrupt(cause error) error {
	if !im.corrupt {
		im.corrupt = true
		im.corruptCause = cause
		im.syncState()
		if im.hdr.Version >= 3 && !im.ro {
			im.hdr.IncompatibleFeatures |= format.IncompatCorrupt
			if im.writeHeader() == nil {
				im.dev.Flush()
			}
		}
	}
	return fmt.Errorf("qcow2: marking image as corrupt: %w", cause)
}

// Close flushes metadata, clears the dirty bit and releases the image. On
// an image marked corrupt it releases the image without flushing and
// returns an error wrapping ErrCorrupt.
func (im *Image) Close() error {
	im.mu.Lock()
	if im.closed {
		im.mu.Unlock()
		return block.ErrClosed
	}
	// Q11: no zeros are written after Close, nor while trimReserved
	// truncates the reserve. Workers never take mu, so this cannot
	// deadlock.
	im.stopFill()
	var err error
	if im.corrupt {
		// As Flush: what was acknowledged since the last flush is not
		// made durable, and the caller must hear it.
		err = fmt.Errorf("%w: image marked corrupt, closed without flushing: %v", ErrCorrupt, im.corruptCause)
	}
	if !im.ro && !im.corrupt {
		err = im.flushLocked()
		if err == nil {
			err = im.trimReserved()
		}
		if err == nil && im.dirtySet {
			im.hdr.IncompatibleFeatures &^= format.IncompatDirty
			if err = im.writeHeader(); err == nil {
				err = im.dev.Flush()
				im.dirtySet = false
			}
		}
	}
	im.closed = true
	im.syncState()
	im.mu.Unlock()
	im.closeCaches()
	im.closeBacking()
	if im.ownDev {
		if cerr := im.dev.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

// Flush makes every write completed before the call durable (B6). Early
// writes (Q10) are acknowledged only once linked, so they are covered.
// On an image marked corrupt it fails: writes acknowledged before the
// corruption was found cannot be made durable.
func (im *Image) Flush() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return block.ErrClosed
	}
	if im.corrupt {
		return fmt.Errorf("%w: image marked corrupt, flush refused: %v", ErrCorrupt, im.corruptCause)
	}
	if im.ro {
		return nil
	}
	return im.flushLocked()
}

func (im *Image) flushLocked() error {
	im.c.flushes.Add(1)
	if invariants.Enabled && invariants.Sometimes(10) {
		// Refcounts never fall below references (Q1, Q3).
		if r, err := im.checkLocked(CheckOptions{MaxMessages: 5}, RepairNone); err == nil && r.Corruptions > 0 {
			if err := invariants.Assertf(false, "flush: %d corruptions: %v", r.Corruptions, r.Messages); err != nil {
				return err
			}
		}
	}
	// L2 first: its dependency writes refcounts ahead of links (Q1);
	// refcount decrements that depend on L2 go after (Q3).
	if err := im.l2c.Write(); err != nil {
		return err
	}
	if err := im.rbc.Write(); err != nil {
		return err
	}
	return im.dev.Flush()
}

// Truncate changes the virtual size. Growing past the L1 table grows it
// (growL1); shrinking is not supported.
func (im *Image) Truncate(size int64) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed {
		return block.ErrClosed
	}
	if im.ro || im.corrupt {
		return ErrReadOnly
	}
	if size < 0 || uint64(size) < im.hdr.Size {
		return fmt.Errorf("%w: shrinking an image", ErrUnsupported)
	}
	if need := im.g.L1EntriesFor(uint64(size)); need > uint64(len(im.l1)) {
		if err := im.growL1(need); err != nil {
			return err
		}
	}
	old := im.hdr.Size
	im.hdr.Size = uint64(size)
	if err := im.writeHeader(); err != nil {
		im.hdr.Size = old
		return err
	}
	im.vsize.Store(uint64(size))
	return im.dev.Flush()
}

var errRetry = errors.New("qcow2: retry allocation")

const (
	stClosed uint32 = 1 << iota
	stNoWrite
)

// syncState publishes closed/ro/corrupt for lock-free readers. Called
// with mu held (or before the image is shared).
func (im *Image) syncState() {
	var s uint32
	if im.closed {
		s |= stClosed
	}
	if im.ro || im.corrupt {
		s |= stNoWrite
	}
	im.state.Store(s)
}
