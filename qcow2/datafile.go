package qcow2

import (
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/qcow2/format"
)

// External data files (QEMU's data_file, incompatible bit 2; DF1-DF6 in
// doc.go). The image file keeps the metadata; guest cluster k lives in
// the data file at the same offset, is not refcounted and is linked with
// COPIED. With data_file_raw (autoclear bit 1) the data file is also a
// valid raw image of the disk.

// dataFile is an image's external data file.
type dataFile struct {
	// ext: the image has the external data file bit (set at open). Its
	// entries are classified with it (format.L2Entry.TypeIn).
	ext bool
	// raw: the raw external data bit (data_file_raw).
	raw bool
	// name is the name the data file was opened by: the header
	// extension's, as it is (QEMU 7.2 opens it relative to the working
	// directory, not the image's), or "" when given as a device.
	name string
	dev  block.Device // nil without one, or opened with NoDataFile
	own  bool         // dev was opened by the image, which closes it
	// size is dev's size as last measured: reads past it are zeros, as
	// QEMU's file driver reads past the end of a file.
	size atomic.Int64
	// unflushed: data was written for a link (datafile_write.go) since
	// the data file's last flush, which the L2 cache's next write-back
	// does first (DF5); flushMu serialises those flushes.
	unflushed atomic.Bool
	flushMu   sync.Mutex
}

// HasDataFile reports whether the image stores its guest data in an
// external data file (incompatible bit 2).
func (im *Image) HasDataFile() bool { return im.df.ext }

// DataFileRaw reports the raw external data bit (data_file_raw).
func (im *Image) DataFileRaw() bool { return im.df.raw }

// DataFileName is the name the external data file was opened by (the
// header's, as it is), "" without one or when it was given as a device.
func (im *Image) DataFileName() string { return im.df.name }

// DataDevice returns the external data file's device, nil without one
// (or when the image was opened for metadata only).
func (im *Image) DataDevice() block.Device { return im.df.dev }

// openDataFile opens the external data file as QEMU's qcow2_do_open does
// (DF1): the device the options give, else the name of the header
// extension, opened as it is (relative to the working directory, as
// QEMU 7.2). An image without the bit may carry the extension: it is
// ignored. Opened for metadata only (NoDataFile), nothing is opened or
// refused, as QEMU's open with BDRV_O_NO_IO (qemu-img info).
func (im *Image) openDataFile() error {
	h := im.hdr
	im.df.ext = h.IncompatibleFeatures&format.IncompatDataFile != 0
	im.df.raw = h.AutoclearFeatures&format.AutoclearDataFileRaw != 0
	if im.opts.NoDataFile {
		return nil
	}
	if !im.df.ext {
		switch {
		case im.opts.DataDevice != nil:
			return ErrDataFileNotExpected
		case im.df.raw:
			return ErrDataFileRawAlone
		}
		return nil
	}
	if d := im.opts.DataDevice; d != nil {
		im.df.dev = d
	} else {
		if h.DataFile == "" {
			return ErrDataFileRequired
		}
		op := im.opts.Opener
		if op == nil {
			op = DefaultOpener
		}
		d, err := op(h.DataFile, im.ro)
		if err != nil {
			return &DataFileOpenError{Name: h.DataFile, Err: err}
		}
		if err := im.lockDataFile(d, h.DataFile); err != nil {
			d.Close()
			return err
		}
		im.df.dev, im.df.own, im.df.name = d, true, h.DataFile
	}
	n, err := im.df.dev.Size()
	if err != nil {
		im.closeDataFile()
		return err
	}
	im.df.size.Store(n)
	return nil
}

// closeDataFile closes a data file the image opened.
func (im *Image) closeDataFile() error {
	if im.df.own && im.df.dev != nil {
		return im.df.dev.Close()
	}
	return nil
}

// kindOf is e's type in this image (DF2: with a data file, an entry
// AllocatedAtZero is normal).
func (im *Image) kindOf(e format.L2Entry) format.ClusterType {
	return e.TypeIn(im.df.ext)
}

// checkExternal refuses, as QEMU's qcow2_get_host_offset does (it
// signals corruption), an entry of guest offset o that a data file
// image cannot have: a compressed one, or one whose host offset is not
// o's cluster (DF2). Like an unaligned offset it is a fatalEntryError
// (Q9).
func (im *Image) checkExternal(o format.GuestOff, e format.L2Entry) error {
	if !im.df.ext {
		return nil
	}
	if e.Compressed() {
		return &fatalEntryError{corruptf("l2_entry", uint64(e), "Compressed cluster entry found in image with external data file")}
	}
	g := &im.g
	cl := format.HostOff(uint64(o) - g.InCluster(o))
	// Normal and zero-alloc clusters; with extended L2 every allocated
	// cluster (Normal here), whatever its subclusters.
	if k := im.kindOf(e); k != format.ClusterNormal && k != format.ClusterZeroAlloc {
		return nil
	}
	if e.Offset() != cl {
		return &fatalEntryError{corruptf("l2_entry", uint64(e),
			"External data file host cluster offset %#x does not match guest cluster offset: %#x", uint64(e.Offset()), uint64(cl))}
	}
	return nil
}

// dataDev is the device guest data clusters live on: the data file, or
// the image's own.
func (im *Image) dataDev() (block.Device, error) {
	if !im.df.ext {
		return im.dev, nil
	}
	if im.df.dev == nil {
		return nil, ErrNoDataFile
	}
	return im.df.dev, nil
}

// readData reads host data at host into v from the device data clusters
// live on. Bytes past the end of a data file read as zeros (QEMU's file
// driver does so; a data file may be shorter than the disk).
func (im *Image) readData(host format.HostOff, v [][]byte) error {
	d, err := im.dataDev()
	if err != nil {
		return err
	}
	if !im.df.ext {
		return d.Readv(int64(host), v)
	}
	n := block.VecLen(v)
	size := im.df.size.Load()
	if int64(host)+n > size {
		if size, err = d.Size(); err != nil {
			return err
		}
		im.df.size.Store(size)
	}
	in := min(n, max(size-int64(host), 0))
	if in == n {
		return d.Readv(int64(host), v)
	}
	vp := getVec()
	defer putVec(vp)
	if in > 0 {
		*vp = sliceVec((*vp)[:0], v, 0, in)
		if err := d.Readv(int64(host), *vp); err != nil {
			return err
		}
	}
	zeroVec(sliceVec((*vp)[:0], v, in, n-in))
	return nil
}

// dataRefcount is the refcount of the data cluster of entry e for
// checkCopied: 1 for every cluster in a data file (DF3: "all guest
// clusters have an implicit refcount of 1"), else the stored count
// (64-bit refcounts may exceed an int64); known is false when it is not
// known.
func (im *Image) dataRefcount(c *checker, e format.L2Entry) (rc uint64, known bool, err error) {
	if im.df.ext {
		return 1, true, nil
	}
	// A cluster past the end of the file has the count its refcount
	// block stores (0 past the table), as QEMU's check_oflag_copied
	// reads it.
	hc := im.g.HostCluster(e.Offset())
	if !im.refcountKnown(hc, uint64(len(c.ref))) {
		return 0, false, nil
	}
	rc, err = im.refcount(hc)
	return rc, true, err
}

// readCrypted reads the encrypted sectors at host into b: from the data
// file if there is one (DF1; its sectors are numbered by their offset
// there, which is the guest's), else from the image's device.
func (im *Image) readCrypted(host format.HostOff, b []byte) error {
	if !im.df.ext {
		return block.ReadAt(im.dev, b, int64(host))
	}
	return im.readData(host, [][]byte{b})
}

// lockDataFile takes the locks QEMU 7.2 takes on a data file (measured
// in /proc/locks beside qemu-nbd): the image's permissions (read, and
// write and resize when writable), sharing everything but resize, even
// read-only (a reader of the image does not share writes of its own
// file); with force-share, read-only, everything.
func (im *Image) lockDataFile(d block.Device, name string) error {
	return LockDataFile(d, name, im.ro, im.opts)
}

// LockDataFile takes on d, the data file name of an image opened
// read-only or not with options o, the locks QEMU 7.2 takes on a data
// file (for a caller that opens it itself: Options.DataDevice).
func LockDataFile(d block.Device, name string, readOnly bool, o Options) error {
	l, ok := d.(block.Locker)
	if o.NoLock || !ok {
		return nil
	}
	perm, shared := LockPerms(FormatQcow2, readOnly, o.ForceShare, false)
	if !(o.ForceShare && readOnly) {
		shared = block.PermAll &^ block.PermResize
	}
	return LockAs(l, name, perm, shared)
}
