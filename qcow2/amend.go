package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"syscall"

	"github.com/qring/qring/qcow2/format"
)

// ErrZeroClusters: a downgrade to compat=0.10 found zero clusters, which
// version 2 cannot represent; they must be written out first (QEMU's
// qcow2_expand_zero_clusters).
var ErrZeroClusters = errors.New("qcow2: the image has zero clusters")

// rewriteHeader applies edit to a copy of the header and writes it (one
// sector write of cluster 0, then a flush); on failure the in-memory
// header is left unchanged. The change is metadata only: the open image
// keeps its backing device and write behaviour until it is reopened.
func (im *Image) rewriteHeader(edit func(h *format.Header) error) error {
	return im.rewriteHeaderAfter(nil, edit)
}

// rewriteHeaderAfter is rewriteHeader with prep run first under the
// same hold of mu, before the header is copied: prep may change
// metadata (and so the header: a refcount table growth), edit may not.
func (im *Image) rewriteHeaderAfter(prep func() error, edit func(h *format.Header) error) error {
	return im.flushedWritable(func() error {
		if prep != nil {
			if err := prep(); err != nil {
				return err
			}
		}
		old := *im.hdr
		h := old
		h.Extensions = append([]format.Extension(nil), old.Extensions...)
		h.UnknownFields = append([]byte(nil), old.UnknownFields...)
		if err := edit(&h); err != nil {
			return err
		}
		*im.hdr = h
		if err := im.writeHeader(); err != nil {
			// The media may hold either header (Q4): a version 2 one
			// with zero clusters written after, say.
			*im.hdr = old
			im.loseWritesLocked(err)
			return err
		}
		im.ver.Store(h.Version)
		im.ctype.Store(uint32(h.CompressionType))
		if err := im.dev.Flush(); err != nil {
			im.loseWritesLocked(err)
			return err
		}
		return nil
	})
}

// flushedWritable flushes the image, then runs fn with mu held once
// metadata may be changed (writableLocked): the preamble of a header
// change (rewriteHeader, Shrink). mu is taken and released here only.
func (im *Image) flushedWritable(fn func() error) error {
	if err := im.Flush(); err != nil {
		return err
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if err := im.writableLocked(); err != nil {
		return err
	}
	return fn()
}

// SetBacking rewrites the backing file name and format in the header
// (qemu-img rebase -u); name "" removes the backing file. The open
// image keeps reading its old backing device until it is reopened.
func (im *Image) SetBacking(name, fmtName string) error {
	return im.rewriteHeader(func(h *format.Header) error {
		if name == "" {
			fmtName = ""
		} else if h.AutoclearFeatures&format.AutoclearDataFileRaw != 0 {
			// A raw data file is the guest disk itself: nothing may
			// show through from below (DF1). QEMU refuses with EINVAL.
			return ErrBackingRawDataFile
		}
		h.BackingFile, h.BackingFormat = name, fmtName
		return nil
	})
}

// ErrBackingRawDataFile is a backing file asked of an image whose data
// file is raw (data_file_raw), as QEMU's qcow2_change_backing_file
// refuses it (EINVAL).
var ErrBackingRawDataFile = fmt.Errorf("a backing file with a raw data file: %w", syscall.EINVAL)

// SetLazyRefcounts sets or clears the lazy_refcounts compatible feature
// (qemu-img amend -o lazy_refcounts=). The bit takes effect at the next
// open; until Close the image keeps its current refcount policy, and
// Close leaves the refcounts clean either way (Q8).
func (im *Image) SetLazyRefcounts(on bool) error {
	return im.rewriteHeader(func(h *format.Header) error {
		if h.Version < 3 {
			if !on {
				return nil
			}
			return fmt.Errorf("%w: lazy refcounts need compat=1.1", ErrUnsupported)
		}
		if on {
			h.CompatibleFeatures |= format.CompatLazyRefcounts
		} else {
			h.CompatibleFeatures &^= format.CompatLazyRefcounts
		}
		return nil
	})
}

// SetVersion changes the header version (2: compat=0.10, 3: compat=1.1),
// as qemu-img amend -o compat= does. Upgrading rewrites the header, and
// first the snapshot table if an entry lacks the disk size
// (prepareUpgradeLocked).
// Downgrading needs 16-bit refcounts, no incompatible feature bits set
// (a dirty image must be closed cleanly first), zlib compression, and
// no zero clusters in the active tables nor in the snapshots'
// (ErrZeroClusters: write them out first, ExpandSnapshotZeroClusters);
// compatible and autoclear bits are dropped.
func (im *Image) SetVersion(v uint32) error {
	if v != 2 && v != 3 {
		return fmt.Errorf("%w: version %d", ErrUnsupported, v)
	}
	// Not while a resize runs (Q18): a growth writes zero clusters past
	// the end, which the downgrade drops. Refused rather than waited
	// for: a Shrink may wait for a queue's owner, which may be the
	// caller.
	if !im.resizeMu.TryLock() {
		return ErrResizeBusy
	}
	defer im.resizeMu.Unlock()
	prep := im.prepareUpgradeLocked
	if v == 2 {
		prep = im.prepareDowngradeLocked
	}
	return im.rewriteHeaderAfter(prep, func(h *format.Header) error {
		if h.Version == v {
			return nil
		}
		if v == 3 {
			h.Version = 3
			if featureNamesFit(im.g.ClusterSize) {
				h.SetExtension(format.ExtFeatureNames, format.FeatureNameTable())
			}
			return nil
		}
		h.Version = 2
		h.CompressionType, h.IncompatibleFeatures = 0, h.IncompatibleFeatures&^format.IncompatCompression
		// Lazy refcounts need version 3; the image is clean (no dirty
		// bit, checked above), so refcounts are kept eagerly from now.
		im.lazy = false
		h.CompatibleFeatures, h.AutoclearFeatures = 0, 0
		im.stopBitmapsLocked() // Q22: version 2 has no bitmaps
		h.UnknownFields = nil
		h.SetExtension(format.ExtFeatureNames, nil)
		return nil
	})
}

// prepareUpgradeLocked gives every snapshot whose extra data lacks the
// disk size (version 2 allows it; version 3 requires 16 bytes, and
// qemu-img check reports such an entry as incomplete) QEMU 7.2's 24
// bytes before the version becomes 3, as qcow2_upgrade rewrites the
// table first: the VM state size, the image's size (what QEMU takes for
// such a snapshot's) and icount -1 (none). A crash between the two
// leaves a valid version 2 image (mu and resizeMu held).
func (im *Image) prepareUpgradeLocked() error {
	if im.hdr.Version != 2 {
		return nil
	}
	snaps := append([]format.Snapshot(nil), im.snapshots...)
	need := false
	for i, sn := range snaps {
		if sn.HasDiskSize() {
			continue
		}
		vm := uint64(sn.VMStateSize)
		if len(sn.ExtraData) >= 8 {
			vm = binary.BigEndian.Uint64(sn.ExtraData)
		}
		snaps[i].ExtraData = format.SnapshotExtra(vm, im.hdr.Size, -1)
		snaps[i].DiskSize = im.hdr.Size
		need = true
	}
	if !need {
		return nil
	}
	return im.writeSnapshotTableLocked(snaps)
}

// prepareDowngradeLocked refuses a downgrade to version 2 that cannot
// be done, and only then drops the zero clusters past the end (mu and
// resizeMu held): a refused downgrade changes nothing. Under mu, where
// zeroing changes entries, none can appear between the scan and the new
// version.
func (im *Image) prepareDowngradeLocked() error {
	if im.hdr.Version == 2 {
		return nil
	}
	if err := im.checkDowngradeLocked(0); err != nil {
		return err
	}
	if err := im.checkNoZeroClustersLocked(); err != nil {
		return err
	}
	if err := im.checkSnapshotZeroClustersLocked(); err != nil {
		return err
	}
	return im.dropZeroClustersPastEndLocked()
}

// CheckDowngrade reports whether SetVersion(2) would refuse for a reason
// other than zero clusters (which ExpandZeroClusters and
// ExpandSnapshotZeroClusters remove): callers check it before expanding
// them, so that a refused downgrade changes nothing, as in QEMU.
func (im *Image) CheckDowngrade() error {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.hdr.Version == 2 {
		return nil
	}
	// The dirty bit this open set (lazy refcounts; a growth that
	// allocated) goes when the image is closed cleanly, as QEMU's
	// downgrade marks the image clean first: SetVersion, on the image
	// reopened, sees no such bit.
	var own uint64
	if im.dirtySet && !im.dirtyKept {
		own = format.IncompatDirty
	}
	return im.checkDowngradeLocked(own)
}

// checkDowngradeLocked: QEMU's refusals in qcow2_downgrade that do not
// depend on zero clusters (mu held); the incompatible bits in ignore do
// not count.
func (im *Image) checkDowngradeLocked(ignore uint64) error {
	h := im.hdr
	incompat := h.IncompatibleFeatures &^ (format.IncompatCompression | ignore)
	switch {
	case h.RefcountOrder != 4:
		return fmt.Errorf("%w: compat=0.10 requires refcount_bits=16", ErrUnsupported)
	case h.IncompatibleFeatures&format.IncompatDataFile != 0: // DF6
		return fmt.Errorf("%w: Cannot downgrade an image with a data file", ErrUnsupported)
	case incompat != 0:
		return fmt.Errorf("%w: Cannot downgrade an image with incompatible features 0x%x set", ErrUnsupported, incompat)
	case im.crypt != nil && len(im.snapshots) > 0 && im.hasBackingFileLocked():
		// Legacy AES: a snapshot's zero cluster over the backing file
		// would become a cluster of plain zeros, garbage through the
		// cipher (QEMU 7.2 downgrades it so).
		return fmt.Errorf("%w: Cannot downgrade an encrypted image with a backing file and internal snapshots (their zero clusters would read as garbage)", ErrUnsupported)
	}
	// As QEMU: a snapshot of another disk size (or a VM state past 4
	// GiB) has fields a version 2 reader would not know to honour.
	for _, sn := range im.snapshots {
		if (sn.HasDiskSize() && sn.DiskSize != h.Size) || snapshotVMState(sn) > math.MaxUint32 {
			return fmt.Errorf("%w: Internal snapshots prevent downgrade of image", ErrUnsupported)
		}
	}
	// zstd: as QEMU, the image becomes zlib (which version 2 implies)
	// if nothing is compressed yet: in the active disk (QEMU looks only
	// there) nor in a snapshot, whose zstd clusters a zlib image could
	// no longer read (found by a differential fuzz: QEMU 7.2 loses them).
	if h.CompressionType != 0 {
		name, err := im.snapshotWithEntryLocked(func(e format.L2Entry) bool { return e.Type() == format.ClusterCompressed })
		if err != nil {
			return err
		}
		if name != "" || im.hasCompressedLocked() {
			return fmt.Errorf("%w: Cannot downgrade an image with zstd compression type and existing compressed clusters", ErrUnsupported)
		}
	}
	return nil
}

// snapshotVMState is the snapshot's VM state size: vm_state_size_large
// from the extra data when it is there, else the 32-bit field.
func snapshotVMState(sn format.Snapshot) uint64 {
	if len(sn.ExtraData) >= 8 {
		return binary.BigEndian.Uint64(sn.ExtraData)
	}
	return uint64(sn.VMStateSize)
}

// hasCompressedLocked reports whether an active L2 entry is compressed,
// or whether the scan failed (mu held; the lookups take no lock).
func (im *Image) hasCompressedLocked() bool {
	size := int64(im.hdr.Size)
	for off := int64(0); off < size; {
		m, err := im.mapRunGated(guestOff(off), uint64(size-off))
		if err != nil || m.kind == format.ClusterCompressed {
			return true
		}
		off += int64(m.length)
	}
	return false
}

// checkNoZeroClustersLocked fails with ErrZeroClusters when an active L2
// entry inside the virtual size is a zero cluster (mu held; the lookups
// take no lock).
func (im *Image) checkNoZeroClustersLocked() error {
	size := int64(im.hdr.Size)
	for off := int64(0); off < size; {
		m, err := im.mapRunGated(guestOff(off), uint64(size-off))
		if err != nil {
			return err
		}
		if m.kind == format.ClusterZeroPlain || m.kind == format.ClusterZeroAlloc {
			return fmt.Errorf("%w at guest offset %d", ErrZeroClusters, off)
		}
		off += int64(m.length)
	}
	return nil
}

// dropZeroClustersPastEndLocked makes the zero clusters past the virtual
// end unallocated (mu and resizeMu held), as a Shrink's full discard
// would: a growth that failed before its header change leaves them
// (Q18), and a version 2 image must not have them. Nothing reads there,
// and no growth runs to need them.
func (im *Image) dropZeroClustersPastEndLocked() error {
	g := &im.g
	cs := int64(g.ClusterSize)
	size := int64(im.hdr.Size)
	l1 := im.l1.Load()
	span := cs * int64(g.L2Entries)
	var fr freeList
	defer im.releaseLocked(&fr)
	dropped := false
	for i := uint64(size / span); i < l1.size(); i++ {
		if l1.load(i).Offset() == 0 {
			continue
		}
		for off := max(int64(i)*span, (size+cs-1)/cs*cs); off < int64(i+1)*span; off += cs {
			e, err := im.entry(guestOff(off))
			if err != nil {
				return err
			}
			if t := e.Type(); t != format.ClusterZeroPlain && t != format.ClusterZeroAlloc {
				continue
			}
			reg, _, _ := im.allocs.TryAcquire(g.GuestCluster(guestOff(off)), 1)
			if reg == nil { // an allocation past the end: none should be
				return ErrResizeBusy
			}
			err = im.zeroClusterLocked(guestOff(off), true, discardFull, &fr)
			im.allocs.Release(reg)
			if err != nil {
				return err
			}
			dropped = true
		}
	}
	if !dropped {
		return nil
	}
	// Durable before the header says version 2 (Q3 for what is freed).
	if err := im.flushLocked(); err != nil {
		return err
	}
	// Zero clusters are read without their host cluster: nobody is
	// reading these.
	for _, e := range fr.es {
		if err := im.freeEntryLocked(e, true, true); err != nil {
			return err
		}
	}
	return nil
}

// SetDataFile records name as the image's external data file (the
// header's data file name extension; "" leaves none, as QEMU does), for
// the next open: the data file open now stays in use (DF1). It is
// qemu-img amend -o data_file=, and fails with ErrSetDataFileName on an image
// without an external data file.
func (im *Image) SetDataFile(name string) error {
	return im.rewriteHeader(func(h *format.Header) error {
		if h.IncompatibleFeatures&format.IncompatDataFile == 0 {
			return ErrSetDataFileName
		}
		h.DataFile = name
		return nil
	})
}

// SetDataFileRaw sets or clears data_file_raw (qemu-img amend -o
// data_file_raw=): clearing it is always allowed (the data file then
// stops being promised as a raw image of the guest disk); setting it on
// an image whose data file is not raw is ErrSetDataFileRaw, as in QEMU.
func (im *Image) SetDataFileRaw(on bool) error {
	return im.rewriteHeader(func(h *format.Header) error {
		raw := h.AutoclearFeatures&format.AutoclearDataFileRaw != 0
		switch {
		case on && !raw:
			return ErrSetDataFileRaw
		case !on:
			h.AutoclearFeatures &^= format.AutoclearDataFileRaw
		}
		return nil
	})
}
