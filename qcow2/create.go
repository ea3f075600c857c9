package qcow2

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

func (o *CreateOptions) normalize() error {
	// First, as QEMU's file driver refuses it before the format looks
	// at anything.
	if err := o.Hints.Check(); err != nil {
		return err
	}
	if o.ClusterSize == 0 {
		o.ClusterSize = 64 << 10
	}
	if o.ClusterSize < 512 || o.ClusterSize > 2<<20 || o.ClusterSize&(o.ClusterSize-1) != 0 {
		return fmt.Errorf("%w: cluster size %d must be a power of two between 512 and 2M", ErrUnsupported, o.ClusterSize)
	}
	if o.Compat == "" {
		o.Compat = "1.1"
	}
	if o.RefcountBits == 0 {
		o.RefcountBits = 16
	}
	if o.RefcountBits < 1 || o.RefcountBits > 64 || o.RefcountBits&(o.RefcountBits-1) != 0 {
		return fmt.Errorf("%w: refcount_bits %d must be a power of two between 1 and 64", ErrUnsupported, o.RefcountBits)
	}
	if o.Compat == "0.10" {
		if o.RefcountBits != 16 {
			return fmt.Errorf("%w: compat=0.10 requires refcount_bits=16", ErrUnsupported)
		}
		if o.LazyRefcounts {
			return fmt.Errorf("%w: lazy refcounts require compat=1.1", ErrUnsupported)
		}
	} else if o.Compat != "1.1" {
		return fmt.Errorf("%w: compat %q (0.10 or 1.1)", ErrUnsupported, o.Compat)
	}
	switch o.CompressionType {
	case "", "zlib":
	case "zstd":
		if o.Compat == "0.10" {
			return fmt.Errorf("%w: compression_type=zstd requires compat=1.1", ErrUnsupported)
		}
	default:
		return fmt.Errorf("%w: compression_type %q (zlib, zstd)", ErrUnsupported, o.CompressionType)
	}
	if o.Preallocation == "" {
		o.Preallocation = PreallocOff
	}
	switch o.Preallocation {
	case PreallocOff, PreallocMetadata, PreallocFalloc, PreallocFull:
	default:
		return fmt.Errorf("%w: preallocation %q", ErrUnsupported, o.Preallocation)
	}
	if o.ExtendedL2 && o.Compat == "0.10" {
		return fmt.Errorf("%w: extended L2 entries require compat=1.1", ErrUnsupported)
	}
	if o.ExtendedL2 && o.ClusterSize < 16<<10 {
		return fmt.Errorf("%w: extended L2 entries are only supported with cluster sizes of at least 16384 bytes", ErrUnsupported)
	}
	if o.Preallocation != PreallocOff && o.BackingFile != "" && !o.ExtendedL2 {
		return fmt.Errorf("%w: preallocation with a backing file needs extended L2 entries", ErrUnsupported)
	}
	if err := o.normalizeEncrypt(); err != nil {
		return err
	}
	if err := o.normalizeDataFile(); err != nil {
		return err
	}
	// Checked before the rounding, which would take a size of -1 to
	// -511 to 0 (an empty disk, or one of its backing file's size) and
	// one near the int64 limit past it to a negative one.
	if o.Size < 0 || o.Size > format.MaxVirtualSize {
		return fmt.Errorf("%w: size %d", ErrUnsupported, o.Size)
	}
	// Sizes are whole 512-byte sectors, rounded up as qemu-img does
	// (MaxVirtualSize is one).
	o.Size = (o.Size + 511) &^ 511
	return nil
}

// Create makes a new qcow2 image at path. An existing file is
// overwritten, but only once its write lock is held (lock.go): an image
// another process uses is refused and left untouched, when the opener's
// devices take locks (block.Locker: uring's files and the default
// opener's block.OSFile). On a block device
// the image has the device's size. A failed Create removes path, and
// the data file, only if it created them.
func Create(path string, o CreateOptions) error {
	if err := o.normalize(); err != nil {
		return err
	}
	op := o.Opener
	if op == nil {
		op = DefaultOpener
	}
	if err := o.resolveBacking(path, op); err != nil {
		return err
	}
	// A size the cluster size cannot map is refused before any file is
	// touched (an existing image was emptied first).
	g := o.geometry()
	if err := o.checkL1(&g); err != nil {
		return err
	}
	if o.DataFile != "" {
		if sameFile(path, o.DataFile) {
			// Each would truncate the other: QEMU fails on its own
			// lock with both files gone.
			return fmt.Errorf("%w: the data file '%s' is the image itself", ErrUnsupported, o.DataFile)
		}
		// Before the image, as QEMU creates it (DF1).
		_, statErr := os.Stat(o.DataFile)
		dfCreated := os.IsNotExist(statErr)
		err := createDataFile(o.DataFile, o.Size, o.Preallocation, o.Hints, op)
		if err == nil {
			err = createImage(path, o, op)
		}
		if err != nil && dfCreated {
			os.Remove(o.DataFile)
		}
		return err
	}
	return createImage(path, o, op)
}

// createImage is Create once the data file, if any, is there.
func createImage(path string, o CreateOptions, op Opener) error {
	_, statErr := os.Stat(path)
	created := os.IsNotExist(statErr)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	dev, err := op(path, false)
	if err == nil {
		err = lockDevice(dev, path, FormatQcow2, Options{})
		if err != nil {
			dev.Close()
		}
	}
	if err != nil {
		if created {
			os.Remove(path)
		}
		return err
	}
	// Preallocation lays the image out as qemu-img does
	// (createPreallocated) on a regular file, also the links of a raw
	// or preallocated data file; on a block device, or with encryption
	// (whose header QEMU allocates first), the engine preallocates or
	// links below.
	direct := (o.Preallocation != PreallocOff || o.DataFileRaw) && o.Encrypt.Format == "" && isRegular(path)
	err = dev.Truncate(0)
	if err == nil {
		o.Hints.Apply(dev)
	}
	if err == nil && direct {
		g := o.geometry()
		if err = o.checkL1(&g); err == nil {
			err = createPreallocated(dev, &o, &g)
		}
	} else if err == nil {
		err = CreateDevice(dev, o)
	}
	if cerr := dev.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if created { // never a file that was there, nor a device node
			os.Remove(path)
		}
		return err
	}
	if o.DataFile != "" {
		err = linkDataFileClusters(path, &o, op, direct)
	} else if o.Preallocation != PreallocOff && !direct {
		// preallocate places every cluster itself: zeros streamed
		// ahead of it would only compete with it, and metadata
		// preallocation must not reserve the data's space at all.
		po := Options{Opener: op, PreallocFill: FillUnwritten}
		if o.Preallocation == PreallocMetadata {
			po.PreallocSize = -1
		}
		var im *Image
		if im, err = Open(path, po); err == nil {
			err = im.preallocate(o.Preallocation)
			if cerr := im.Close(); err == nil {
				err = cerr
			}
		}
	}
	if err != nil && created {
		os.Remove(path)
	}
	return err
}

func isRegular(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular()
}

// resolveBacking probes the backing file's format and takes its size
// when the options leave them out.
func (o *CreateOptions) resolveBacking(path string, op Opener) error {
	if o.BackingFile == "" || (o.Size != 0 && o.BackingFormat != "") {
		return nil
	}
	bpath := o.BackingFile
	if !filepath.IsAbs(bpath) {
		bpath = filepath.Join(filepath.Dir(path), bpath)
	}
	var err error
	if o.BackingFormat == "" {
		if o.BackingFormat, err = Probe(bpath); err != nil {
			return fmt.Errorf("qcow2: backing file: %w", err)
		}
	}
	if o.Size == 0 {
		// Shared with everyone, as QEMU's bdrv_img_create opens it
		// (force-share): an image another user writes takes an overlay.
		bd, err := OpenFormat(bpath, o.BackingFormat, Options{ReadOnly: true, ForceShare: true, Opener: op, OpenBacking: o.OpenBacking, asBacking: true})
		if err != nil {
			return fmt.Errorf("qcow2: backing file: %w", err)
		}
		o.Size, err = bd.Size()
		bd.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// CreateDevice writes a new, empty qcow2 image onto dev (whose contents
// are overwritten). Preallocation needs Create.
func CreateDevice(dev block.Device, o CreateOptions) error {
	if err := o.normalize(); err != nil {
		return err
	}
	g := o.geometry()
	cs, ro := g.ClusterSize, g.RefcountOrder
	l1Entries := g.L1EntriesFor(uint64(o.Size))
	if err := o.checkL1(&g); err != nil {
		return err
	}
	// QEMU's layout (qemuCreateLayout) when its refcount blocks fit the
	// one-cluster refcount table it starts with; otherwise all the
	// refcount blocks ahead of the L1 table, the table as large as they
	// need.
	nl1 := l1Clusters(l1Entries, cs)
	tc := uint64(1)
	l1Cluster := uint64(3)
	blocks, total, ok := qemuCreateLayout(&g, nl1)
	if !ok {
		// Metadata clusters: header, reftable (tc), refblocks (rb), L1.
		// Solve for rb refblocks covering all of them.
		rb := uint64(1)
		for {
			total := 1 + tc + rb + nl1
			nrb := (total + g.RefblockEntries - 1) / g.RefblockEntries
			ntc := (nrb*8 + cs - 1) / cs
			if nrb == rb && ntc == tc {
				break
			}
			rb, tc = nrb, ntc
		}
		blocks = make([]uint64, rb)
		for i := range blocks {
			blocks[i] = 1 + tc + uint64(i)
		}
		l1Cluster = 1 + tc + rb
		total = l1Cluster + nl1
	}
	if tc*cs > format.MaxReftableSize {
		return fmt.Errorf("%w: refcount table too large", ErrUnsupported)
	}
	h := o.header(&g, l1Entries)
	h.RefcountTableOffset = format.HostOff(cs)
	h.RefcountTableClusters = uint32(tc)
	// An empty disk has an empty L1 table at offset 0, as in QEMU (its
	// truncate to size 0 allocates none).
	if l1Entries > 0 {
		h.L1TableOffset = format.HostOff(l1Cluster * cs)
	}
	hb, err := h.Encode()
	if err != nil {
		return err
	}
	img := block.AlignedBuf(int(total*cs), block.DefaultMemAlign)
	copy(img, hb)
	for i, b := range blocks {
		if b != 0 {
			format.PutReftable(img[cs:], uint64(i), g.HostClusterOff(b))
		}
	}
	for k := uint64(0); k < total; k++ {
		b := blocks[k>>g.RefblockBits]
		format.SetRefcount(img[b*cs:(b+1)*cs], ro, k%g.RefblockEntries, 1)
	}
	if err := dev.Truncate(0); err != nil {
		return err
	}
	// The file ends where QEMU's does: after the L1 table's last entry
	// when nothing follows it (it writes the table, not its clusters).
	// Only that much is written (to the next aligned boundary), so that
	// the image needs no more space than QEMU's while it is made: the
	// zeros of the L1 table's clusters past its last entry (up to 2 MiB
	// less one entry with cluster_size=2M) made create fail on a file
	// system with room for QEMU's image.
	l1End := l1Cluster*cs + l1Entries*format.TableEntrySize
	cut := l1Cluster+nl1 == total && l1End < total*cs
	wlen := total * cs
	if cut {
		a := uint64(max(dev.Caps().Align, 512))
		wlen = min(wlen, (l1End+a-1)/a*a)
	}
	// In QEMU's steps, each failure in its words (qcow2_co_create: the
	// header's cluster, the refcount table and block, then the L1 table
	// its truncate to the disk's size grows), one write each.
	steps := []struct {
		end  uint64
		step string
	}{
		{cs, "Could not write qcow2 header"},
		{l1Cluster * cs, "Could not write refcount table"},
		{wlen, "Could not resize image: Failed to grow the L1 table"},
	}
	for at, i := uint64(0), 0; at < wlen; i++ {
		end := min(steps[i].end, wlen)
		if end <= at {
			continue
		}
		if err := block.WriteAt(dev, img[at:end], int64(at)); err != nil {
			return &StepError{Step: steps[i].step, Err: err}
		}
		at = end
	}
	if cut {
		if err := dev.Truncate(int64(l1End)); err != nil {
			return err
		}
	}
	if err := dev.Flush(); err != nil {
		return err
	}
	return o.addEncryption(dev)
}

// header is the header of a new image with l1Entries L1 entries, its
// tables' offsets left to the caller.
func (o *CreateOptions) header(g *format.Geometry, l1Entries uint64) *format.Header {
	h := &format.Header{
		Version:       3,
		ClusterBits:   g.ClusterBits,
		Size:          uint64(o.Size),
		L1Size:        uint32(l1Entries),
		RefcountOrder: g.RefcountOrder,
		BackingFile:   o.BackingFile,
		BackingFormat: o.BackingFormat,
	}
	if o.Compat == "0.10" {
		h.Version = 2
		return h
	}
	// QEMU's order: the backing format first (Encode writes it where
	// the list names it), then the feature names.
	if o.BackingFormat != "" {
		h.Extensions = append(h.Extensions, format.Extension{Type: format.ExtBackingFmt})
	}
	if o.DataFile != "" { // DF1: after the backing format, as QEMU
		h.DataFile = o.DataFile
		h.Extensions = append(h.Extensions, format.Extension{Type: format.ExtDataFile})
		h.IncompatibleFeatures |= format.IncompatDataFile
		if o.DataFileRaw {
			h.AutoclearFeatures |= format.AutoclearDataFileRaw
		}
	}
	if featureNamesFit(g.ClusterSize) {
		h.Extensions = append(h.Extensions, format.Extension{Type: format.ExtFeatureNames, Data: format.FeatureNameTable()})
	}
	if o.LazyRefcounts {
		h.CompatibleFeatures |= format.CompatLazyRefcounts
	}
	if o.CompressionType == "zstd" {
		h.CompressionType = format.CompressionZstd
		h.IncompatibleFeatures |= format.IncompatCompression
	}
	if o.ExtendedL2 {
		h.IncompatibleFeatures |= format.IncompatExtendedL2
	}
	return h
}

// geometry is the new image's geometry (o normalized).
func (o *CreateOptions) geometry() format.Geometry {
	cb := uint32(0)
	for 1<<cb < o.ClusterSize {
		cb++
	}
	ro := uint32(0)
	for 1<<ro < o.RefcountBits {
		ro++
	}
	return format.NewGeometry(cb, ro, o.ExtendedL2)
}

// ErrSizeTooLarge is a virtual size whose L1 table QEMU would not open
// at the cluster size asked for (it wraps ErrUnsupported too).
var ErrSizeTooLarge = errors.New("virtual size too large for the cluster size")

// checkL1 refuses a size whose L1 table QEMU would not open.
func (o *CreateOptions) checkL1(g *format.Geometry) error {
	if g.L1EntriesFor(uint64(o.Size))*format.TableEntrySize > format.MaxL1Bytes {
		return fmt.Errorf("%w: %w (%d bytes)", ErrUnsupported, ErrSizeTooLarge, g.ClusterSize)
	}
	return nil
}

// featureNamesFit says whether QEMU writes the feature name table in
// the header of an image with clusters of cs bytes: not for 4 KiB and
// below (qcow2_update_header), where the names would leave little room
// for a backing file name.
func featureNamesFit(cs uint64) bool { return cs > 4096 }

// qemuCreateLayout places the metadata of a new image of nl1 L1 clusters
// as QEMU's qcow2_co_create does: the header, the refcount table and
// refcount block 0 in clusters 0-2, the L1 table from cluster 3 (its
// truncate to the size allocates it), and each further refcount block
// its clusters need at the first free cluster past everything, when the
// first cluster it covers is counted (alloc_refcount_block; a block
// that does not cover itself is counted first in the block that does,
// placed next). blocks[i] is the cluster of refcount block i (0: none),
// total the clusters in use, all of them from 0. ok is false when a
// block would not fit the one-cluster refcount table (QEMU grows the
// table then).
func qemuCreateLayout(g *format.Geometry, nl1 uint64) (blocks []uint64, total uint64, ok bool) {
	capacity := g.ClusterSize / format.TableEntrySize
	total = 3 + nl1
	n := min((total+g.RefblockEntries-1)>>g.RefblockBits, capacity)
	blocks = make([]uint64, n, capacity)
	blocks[0] = 2
	var ensure func(i uint64) bool
	ensure = func(i uint64) bool {
		if i >= capacity {
			return false
		}
		for uint64(len(blocks)) <= i {
			blocks = append(blocks, 0)
		}
		if blocks[i] != 0 {
			return true
		}
		b := total
		total++
		if b>>g.RefblockBits != i && !ensure(b>>g.RefblockBits) {
			return false
		}
		blocks[i] = b
		return true
	}
	for i := uint64(1); i<<g.RefblockBits < 3+nl1; i++ {
		if !ensure(i) {
			return nil, 0, false
		}
	}
	return blocks, total, true
}

// preallocate allocates every guest cluster (qemu-img preallocation=
// metadata/falloc/full) in host order.
func (im *Image) preallocate(mode string) error {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.preallocateLocked(mode, 0, im.hdr.Size, growReserve{})
}

// preallocateLocked allocates the guest clusters of [from, to) that
// have no cluster yet (none of a new image; those a growth adds), each
// in the mode of qemu-img preallocation= metadata, falloc or full, in
// host order (mu held, no allocation in flight). If it fails, the
// entries it set are taken back (unlinkPrealloc): on a full file
// system a full or falloc preallocation failed with its clusters linked
// past the file's end, which both checks called corruption. The range
// res a growth gave its space already (reserveGrowthLocked) is not
// reserved again.
func (im *Image) preallocateLocked(mode string, from, to uint64, res growReserve) (err error) {
	g := &im.g
	n := (to + g.ClusterSize - 1) >> g.ClusterBits
	reused := false
	var linked []format.GuestOff
	// A falloc or full growth (res given) takes its data clusters
	// first (growthDataLocked): those not linked when it ends (it
	// failed) are nobody's and go back.
	var data []format.HostOff
	defer func() {
		if err != nil && len(linked) > 0 {
			im.unlinkPrealloc(linked)
		}
		for _, h := range data {
			if h != 0 && im.freeClustersLocked(h, 1) != nil {
				break
			}
		}
	}()
	if res.end != 0 {
		if data, err = im.growthDataLocked(from, n); err != nil {
			return err
		}
	}
	// The data clusters, in runs of host-contiguous ones: falloc and
	// full reserve or write every one of them (metadata lies between).
	type run struct{ off, end int64 }
	var runs []run
	// The file reaches each data cluster before its entry is set: an L2
	// table is written back in the middle (the next table's allocation,
	// an eviction), and a crash then left entries past the end of the
	// file, a corruption for both checks, wherever no reserve ahead had
	// grown the file already (metadata mode always). It is grown once
	// for the clusters still to link, and what a reused cluster left
	// unused is cut at the end.
	origSize, err := im.dev.Size()
	if err != nil {
		return err
	}
	fileEnd, grownTo := origSize, int64(0)
	for gc := from >> g.ClusterBits; gc < n; gc++ {
		goff := g.GuestClusterOff(gc)
		if err := im.ensureL2Locked(goff); err != nil {
			return err
		}
		if e, err := im.rawEntry(goff); err != nil {
			return err
		} else if e.Type() != format.ClusterUnallocated {
			continue // the old end's cluster, allocated or zero
		}
		hwm := format.HostOff(im.space.hwm.Load())
		var host format.HostOff
		if data != nil {
			if host = data[gc-from>>g.ClusterBits]; host == 0 {
				continue
			}
		} else if host, _, err = im.allocClustersLocked(1); err != nil {
			return err
		}
		if host < hwm && data == nil {
			// (A growth's data lie past the mark: growthDataLocked.)
			// A cluster below the high-water mark was freed earlier
			// (the old refcount table after a growth) and holds stale
			// bytes: the guest must read zeros there (Q2), so zero it
			// before it is linked. Above it the file was never
			// written since open: a hole, or space zeroed ahead.
			if err := im.dev.WriteZeroes(int64(host), int64(g.ClusterSize), 0); err != nil {
				return err
			}
			reused = true
		}
		if e := int64(host) + int64(g.ClusterSize); e > fileEnd {
			// (A reserve ahead may have grown it since: never cut.)
			if fileEnd, err = im.dev.Size(); err != nil {
				return err
			}
			if e > fileEnd {
				fileEnd = e + int64(n-gc-1)*int64(g.ClusterSize)
				if err := im.dev.Truncate(fileEnd); err != nil {
					return err
				}
				grownTo = fileEnd
			}
		}
		if k := len(runs) - 1; k >= 0 && runs[k].end == int64(host) {
			runs[k].end += int64(g.ClusterSize)
		} else {
			runs = append(runs, run{int64(host), int64(host) + int64(g.ClusterSize)})
		}
		im.c.clustersAllocated.Add(1)
		if err := im.l2c.SetDependency(im.rbc); err != nil {
			return err
		}
		if err := im.setEntry(goff, format.MakeL2(host, true, false)); err != nil {
			return err
		}
		linked = append(linked, goff)
		if data != nil {
			data[gc-from>>g.ClusterBits] = 0 // linked: not to give back
		}
	}
	if reused {
		// The zeros are durable before any L2 entry that links them
		// (the flush below writes the tables).
		if err := im.dev.Flush(); err != nil {
			return err
		}
	}
	end := int64(im.space.hwm.Load())
	if keep := max(res.size, end, int64(im.space.reserved)); res.end > keep {
		// A growth's space counted a table for every L1 entry it
		// covers; those that went into holes below leave its end
		// unused, which the file gives back (qemu-img's file ends
		// at its last table).
		if err := im.dev.Truncate(keep); err != nil {
			return err
		}
	}
	if keep := max(origSize, end, int64(im.space.reserved)); grownTo > keep {
		// Past every allocation (the clusters the estimate counted
		// that were there already): grown here, cut back, unless a
		// reserve has grown the file since.
		if sz, err := im.dev.Size(); err == nil && sz == grownTo {
			if err := im.dev.Truncate(keep); err != nil {
				return err
			}
		}
	}
	switch mode {
	case PreallocMetadata:
		if sz, _ := im.dev.Size(); sz < end {
			if err := im.dev.Truncate(end); err != nil {
				return err
			}
		}
	case PreallocFalloc, PreallocFull:
		// Every data cluster gets its space, as QEMU's falloc
		// (reserved: unwritten extents) and full (zeros written): none
		// was written since open, and the tables between them are
		// left alone (dirty ones are written back by the flush below).
		// Space past the last one up to the end is reserved too.
		if sz, err := im.dev.Size(); err == nil && sz < end {
			if k := len(runs) - 1; k >= 0 && runs[k].end >= sz {
				runs[k].end = max(runs[k].end, end)
			} else {
				runs = append(runs, run{sz, end})
			}
		}
		for _, r := range runs {
			// The parts outside res (res.off = res.end = 0: all).
			for _, p := range []run{{r.off, min(r.end, res.off)}, {max(r.off, res.end), r.end}} {
				if p.off >= p.end {
					continue
				}
				if err := reserveData(im.dev, p.off, p.end, mode); err != nil {
					return &reserveError{mode: mode, err: err}
				}
			}
		}
	}
	return im.flushLocked()
}

// growthDataLocked takes the data clusters of the guest clusters [from's,
// n) a falloc or full growth links (those without a cluster), in QEMU
// 7.2's order (qcow2_co_truncate): contiguous from the reserved range's
// start (qcow2_alloc_clusters_at at allocation_start, the high-water
// mark here: im.freeIdx), before any L2 table that will link them,
// which then goes wherever the allocator finds room first, as
// l2_allocate's qcow2_alloc_clusters does: the holes below the mark
// (the old L1 or refcount table a growth freed) and then past the
// data. Placed between the data, as every other preallocation places
// them, they made a +3G full growth two clusters longer than qemu-img's
// and split its data. data[i] is guest cluster from's+i's, 0 for one
// that has a cluster already (the old end's). mu held.
func (im *Image) growthDataLocked(from, n uint64) (data []format.HostOff, err error) {
	g := &im.g
	data = make([]format.HostOff, n-from>>g.ClusterBits)
	defer func() {
		if err != nil {
			for _, h := range data {
				if h != 0 && im.freeClustersLocked(h, 1) != nil {
					break
				}
			}
			data = nil
		}
	}()
	for gc := from >> g.ClusterBits; gc < n; gc++ {
		e, err := im.rawEntry(g.GuestClusterOff(gc))
		if err != nil {
			return data, err
		}
		if e.Type() != format.ClusterUnallocated {
			continue
		}
		if data[gc-from>>g.ClusterBits], _, err = im.allocClustersLocked(1); err != nil {
			return data, err
		}
	}
	im.freeIdx = 0 // the tables: the first free cluster
	return data, nil
}

// reserveError is a failure of preallocateLocked to give the data
// clusters their space (reserveData), worded as its cause: a growth
// names it as QEMU's qcow2_co_truncate names the file driver's
// truncate with the mode (preallocStep).
type reserveError struct {
	mode string
	err  error
}

func (e *reserveError) Error() string { return e.err.Error() }
func (e *reserveError) Unwrap() error { return e.err }

// preallocStep is the StepError of a growth whose preallocation failed
// to give the data clusters their space: QEMU's words ("Failed to resize
// underlying file: " and its file driver's step), as qemu-img resize
// --preallocation=full|falloc says them on a full file system.
func (e *reserveError) preallocStep() *StepError {
	step := "Could not preallocate new data"
	if e.mode == PreallocFull {
		step = "Could not write zeros for preallocation"
	}
	return &StepError{Step: "Failed to resize underlying file: " + step, Err: e.err}
}

// unlinkPrealloc takes back the entries a failed preallocateLocked set
// (guest clusters past the size guests see, or of an image being
// created: no request can have found them) and frees their clusters once
// that is durable (Q3); if it cannot be made durable they leak.
func (im *Image) unlinkPrealloc(linked []format.GuestOff) {
	hosts := make([]format.HostOff, 0, len(linked))
	for _, goff := range linked {
		e, err := im.rawEntry(goff)
		if err != nil || im.setEntry(goff, 0) != nil {
			return
		}
		hosts = append(hosts, e.Offset())
	}
	if im.flushLocked() != nil {
		return
	}
	for _, h := range hosts {
		if im.freeClustersLocked(h, 1) != nil {
			return
		}
	}
	im.flushLocked()
}
