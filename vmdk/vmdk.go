package vmdk

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vmdk/format"
)

// Options configure Open.
type Options struct {
	// Name is the image's path as given: extent names resolve against
	// its directory, and QEMU's messages name it.
	Name string
	// OpenExtent opens a descriptor's extent file, for writing when the
	// image is opened Writable; nil refuses descriptor files.
	OpenExtent func(path string, writable bool) (block.Device, error)
	// OpenParent opens the image a parentFileNameHint names (path: the
	// hint, a relative one against Name's directory) as a VMDK image,
	// read-only (KD6); nil refuses images with a parent.
	OpenParent func(path string) (*Disk, error)
	// NoParent opens an image with a parent without it, as qemu-img
	// info does (BDRV_O_NO_BACKING): its unallocated grains read as
	// zeros.
	NoParent bool
	// Writable opens the image for writing (KD8); the file must be
	// writable.
	Writable bool
}

// extent is one extent of the image (KD2: fixed after Open).
type extent struct {
	file    block.Device
	own     bool   // opened by Open: closed by Close
	name    string // as QEMU names it (info, map)
	typ     string // the descriptor's type, "" for a monolithic image
	start   int64  // guest byte where it starts
	size    int64  // bytes
	fileLen int64
	flat    bool
	flatOff int64 // bytes
	layout  format.Layout
	gd      []uint32 // KD3: only the entries within the file
	// sw is a writable sparse extent's state (write.go); nil when
	// read-only or flat.
	sw *sparseWriter
}

// Disk is an open VMDK image: a block.Device, read-only (KD1) unless
// opened Writable (KD8).
type Disk struct {
	w              *writer // nil unless Writable (write.go)
	file           block.Device
	descName       string // the image's file name (Options.Name)
	extents        []extent
	size           int64
	createType     string
	cid            atomic.Uint32 // changed by the first write (KD11)
	pcid           uint32
	gdEntries      int64 // all the extents' grain directory entries (KD3)
	block.ReadOnly       // writes refused (KD1) unless w is set

	parentHint string // parentFileNameHint, "" for none (KD6)
	parentPath string // the hint resolved against the image's directory
	parent     *Disk  // nil without a parent or with NoParent
	cidValid   bool   // the parent's CID is this image's parentCID (KD6)
}

var (
	_ block.Device     = (*Disk)(nil)
	_ block.DataMapper = (*Disk)(nil)
)

// fileLength is a file's length in bytes, rounded up to a sector as
// QEMU counts it (bdrv_nb_sectors).
func fileLength(f block.Device) (int64, error) {
	n, err := f.Size()
	if err != nil {
		return 0, err
	}
	return (n + format.SectorSize - 1) &^ (format.SectorSize - 1), nil
}

// readDesc is vmdk_read_desc: at most format.MaxDescFile bytes at off.
func readDesc(f block.Device, off int64) ([]byte, error) {
	n, err := f.Size()
	if err != nil {
		return nil, err
	}
	// QEMU 7.2 reads a file shorter than a magic too (and finds no
	// descriptor in it): the buffer holds at least 4 bytes, zeros past
	// the file's end (B2).
	buf := make([]byte, max(min(n, format.MaxDescFile), 4))
	if err := block.ReadAt(f, buf, off); err != nil {
		return nil, fmt.Errorf("Could not read from file: %w", err)
	}
	return buf, nil
}

// Open reads the VMDK image in file as QEMU's vmdk_open does, in its
// order and words where it refuses the same image (format's KF2). The
// Disk owns file from then on; on error file is left to the caller.
func Open(file block.Device, o Options) (*Disk, error) {
	buf, err := readDesc(file, 0)
	if err != nil {
		return nil, err
	}
	d := &Disk{file: file, descName: o.Name, ReadOnly: block.ReadOnly{Why: "vmdk (opened read-only)"}}
	ok := false
	defer func() {
		if !ok {
			d.closeExtents()
		}
	}()
	var desc format.Descriptor
	if string(buf[:4]) == string(format.MagicVMDK4) || string(buf[:4]) == string(format.MagicVMDK3) {
		d.createType = "monolithicSparse"
		if err := d.addSparse(file, o.Name, "", false); err != nil {
			return nil, err
		}
		// The embedded descriptor, where QEMU looks for it (sector 1).
		db := make([]byte, format.DescSize)
		if err := block.ReadAt(file, db, format.SectorSize); err != nil {
			return nil, err
		}
		desc = format.ParseDescriptor(string(db[:format.DescSize-1]))
	} else {
		if err := d.openDescFile(format.ParseDescriptor(string(buf)), o); err != nil {
			return nil, err
		}
		// QEMU looks for the CIDs and a parent in the first DESC_SIZE
		// bytes only (vmdk_read_cid, vmdk_parent_open).
		desc = format.ParseDescriptor(string(buf[:min(len(buf), format.DescSize-1)]))
	}
	if desc.ParentHintOpen || !desc.HasCID || !desc.HasParentCID {
		// QEMU's vmdk_read_cid fails with EINVAL and no message of its
		// own: the block layer's then names the file.
		return nil, &format.Error{Msg: fmt.Sprintf("Could not open '%s': Invalid argument", o.Name), Err: format.ErrCorrupt}
	}
	d.cid.Store(desc.CID)
	d.pcid = desc.ParentCID
	if err := d.openParent(desc.ParentHint, o); err != nil {
		return nil, err
	}
	if o.Writable {
		if err := d.openWriter(); err != nil {
			if fe := (*format.Error)(nil); errors.As(err, &fe) {
				err = notWritable{err} // a refusal, not an I/O error
			}
			return nil, err
		}
	}
	ok = true
	return d, nil
}

// openParent opens the parent hint names (KD6), unless there is none or
// o says not to.
func (d *Disk) openParent(hint string, o Options) error {
	if hint == "" {
		return nil
	}
	d.parentHint, d.parentPath = hint, hint
	if i := strings.LastIndexByte(o.Name, '/'); i >= 0 && !filepath.IsAbs(hint) {
		d.parentPath = o.Name[:i+1] + hint // as extent names resolve
	}
	if o.NoParent {
		return nil
	}
	if o.OpenParent == nil {
		return format.Unsupported("VMDK images with a parent (parentFileNameHint %q) need it opened, which this caller cannot do", hint)
	}
	p, err := o.OpenParent(d.parentPath)
	if err != nil {
		return err
	}
	d.parent, d.cidValid = p, p.cid.Load() == d.pcid
	return nil
}

// ErrParentCID fails a read that needs the parent when the parent's CID
// is not the image's parentCID: the parent changed since the image was
// made from it, as QEMU's vmdk_is_cid_valid finds (KD6). Its text is
// strerror(EINVAL), which QEMU's tools print.
var ErrParentCID error = parentCIDError{}

type parentCIDError struct{}

func (parentCIDError) Error() string { return "Invalid argument" }
func (parentCIDError) Unwrap() error { return syscall.EINVAL }

// openDescFile is vmdk_open_desc_file and vmdk_parse_extents.
func (d *Disk) openDescFile(desc format.Descriptor, o Options) error {
	if !desc.HasCreateType {
		return &format.Error{Msg: "invalid VMDK image descriptor", Err: format.ErrCorrupt}
	}
	switch ct := desc.CreateType; ct {
	case "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat":
	case "vmfs", "vmfsSparse", "seSparse":
		return format.Unsupported("VMDK create type '%s' is not supported by qring (monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtentSparse and twoGbMaxExtentFlat are)", ct)
	default:
		return &format.Error{Msg: fmt.Sprintf("Unsupported image type '%s'", ct), Err: format.ErrUnsupported}
	}
	d.createType = desc.CreateType
	if desc.Invalid != "" {
		return &format.Error{Msg: "Invalid extent line: " + desc.Invalid, Err: format.ErrCorrupt}
	}
	if o.OpenExtent == nil && len(desc.Extents) > 0 {
		return format.Unsupported("VMDK descriptor files need their extent files, which this caller cannot open")
	}
	dir := ""
	if i := strings.LastIndexByte(o.Name, '/'); i >= 0 {
		dir = o.Name[:i+1]
	}
	for _, e := range desc.Extents {
		switch e.Type {
		case "VMFS", "VMFSSPARSE", "SESPARSE":
			return format.Unsupported("VMDK %s extents are not supported by qring (FLAT and SPARSE are)", e.Type)
		}
		path := e.File
		if !filepath.IsAbs(path) {
			path = dir + path
		}
		f, err := o.OpenExtent(path, o.Writable)
		if err != nil {
			return err
		}
		if e.Type == "FLAT" {
			n, err := f.Size()
			if err != nil {
				f.Close()
				return err
			}
			if e.Sectors > 1<<54 || e.Offset > 1<<54 {
				f.Close()
				return &format.Error{Msg: "Image size too large", Err: format.ErrTooLarge}
			}
			if err := d.add(extent{file: f, own: true, name: path, typ: e.Type, size: e.Sectors * format.SectorSize,
				fileLen: n, flat: true, flatOff: e.Offset * format.SectorSize}); err != nil {
				f.Close()
				return err
			}
			continue
		}
		if err := d.addSparse(f, path, e.Type, true); err != nil {
			f.Close()
			return err
		}
	}
	return nil
}

// add appends e after the extents so far; the total size is checked at
// each step, so no sum of sizes overflows.
func (d *Disk) add(e extent) error {
	if e.size < 0 || e.size > maxSize-d.size {
		return &format.Error{Msg: "Image size too large", Err: format.ErrTooLarge}
	}
	e.start = d.size
	d.size += e.size
	d.extents = append(d.extents, e)
	return nil
}

// maxSize is QEMU's BDRV_MAX_LENGTH: no image is larger.
const maxSize = 1<<63 - 1<<30

// addSparse is vmdk_open_vmdk4 and vmdk_init_tables (KD3).
func (d *Disk) addSparse(f block.Device, name, typ string, own bool) error {
	fileLen, err := fileLength(f)
	if err != nil {
		return err
	}
	buf, err := readDesc(f, 0)
	if err != nil {
		return err
	}
	if len(buf) < format.HeaderSize {
		buf = append(buf, make([]byte, format.HeaderSize-len(buf))...)
	}
	h, err := format.ParseHeader(buf)
	if err != nil {
		return err
	}
	if h.Capacity == 0 && h.DescOffset != 0 {
		// QEMU opens the descriptor embedded there as a descriptor
		// file (vmdk_open_vmdk4): refused in its words where QEMU
		// refuses it, in qring's where QEMU would go on.
		db, err := readDesc(f, int64(min(h.DescOffset, 1<<40))*format.SectorSize)
		if err != nil {
			return err
		}
		switch desc := format.ParseDescriptor(string(db)); {
		case !desc.HasCreateType:
			return &format.Error{Msg: "invalid VMDK image descriptor", Err: format.ErrCorrupt}
		case desc.CreateType != format.MonolithicFlat && desc.CreateType != format.TwoGbMaxExtentFlat &&
			desc.CreateType != format.TwoGbMaxExtentSparse && desc.CreateType != "vmfs" && desc.CreateType != "vmfsSparse" && desc.CreateType != "seSparse":
			return &format.Error{Msg: fmt.Sprintf("Unsupported image type '%s'", desc.CreateType), Err: format.ErrUnsupported}
		}
		return format.Unsupported("VMDK sparse extents with a descriptor of their own and no capacity are not supported by qring")
	}
	if h.GDOffset == format.GDAtEnd {
		if fileLen < format.FooterSpan {
			return &format.Error{Msg: "Invalid footer", Err: format.ErrCorrupt}
		}
		fb := make([]byte, format.FooterSpan)
		if err := block.ReadAt(f, fb, fileLen-format.FooterSpan); err != nil {
			return fmt.Errorf("Failed to read footer: %w", err)
		}
		if h, err = format.ParseFooter(fb); err != nil {
			return err
		}
	}
	l, err := h.Layout(fileLen / format.SectorSize)
	if err != nil {
		return err
	}
	if l.Compressed {
		d.createType = "streamOptimized"
	}
	// The grain directory lies within the file, and only that much is
	// allocated (KD3); all the extents' directories together hold no
	// more entries than QEMU allows one (a descriptor may name one
	// file many times).
	if l.GDOffset+4*l.L1Size > fileLen {
		return &format.Error{Msg: fmt.Sprintf("Could not read l1 table from extent '%s': grain directory past the end of the file", name), Err: format.ErrCorrupt}
	}
	if d.gdEntries += l.L1Size; d.gdEntries > format.MaxL1Size {
		return &format.Error{Msg: "L1 size too big", Err: format.ErrTooLarge}
	}
	gdb := make([]byte, 4*l.L1Size)
	if err := block.ReadAt(f, gdb, l.GDOffset); err != nil {
		return fmt.Errorf("Could not read l1 table from extent '%s': %w", name, err)
	}
	gd := make([]uint32, l.L1Size)
	for i := range gd {
		gd[i] = format.Entry(gdb, i)
	}
	if l.RGDOffset < 0 || l.RGDOffset > maxSize-4*l.L1Size {
		// QEMU's vmdk_init_tables reads the redundant directory next
		// (only a write uses it), and the block layer refuses a read
		// at a negative offset or past its largest one; a directory
		// past the end of the file reads as zeros there.
		return &format.Error{Msg: fmt.Sprintf("Could not read l1 backup table from extent '%s': Input/output error", name), Err: format.ErrCorrupt}
	}
	return d.add(extent{file: f, own: own, name: name, typ: typ, size: l.Sectors * format.SectorSize,
		fileLen: fileLen, layout: l, gd: gd})
}

// grain kinds of a sparse lookup (KD5).
const (
	unalloc = iota
	zeroed
	allocated
)

// errPastEOF is a table or grain past the end of its file (KD3).
var errPastEOF = errors.New("vmdk: grain table or grain past the end of the file")

// lookup maps guest offset off (within extent e) to its grain: kind,
// the grain's host offset, and how many bytes from off (at most n) the
// grain covers.
func (e *extent) lookup(off, n int64) (kind int, host int64, k int64, err error) {
	rel := off - e.start
	n = min(n, e.size-rel)
	if e.flat {
		return allocated, e.flatOff + rel, n, nil
	}
	gb := e.layout.GrainBytes()
	k = min(n, gb-rel%gb)
	l1, l2, ok := e.layout.Index(rel)
	if !ok {
		return 0, 0, k, fmt.Errorf("vmdk: offset %d past the grain directory: %w", off, block.ErrRange)
	}
	if e.sw != nil {
		// A writable image's entries: from its tables in memory, or
		// the file's where no write loaded them (KD8).
		g, err := e.sw.tables.get(l1*e.layout.GTEs + l2)
		if err != nil {
			return 0, 0, k, err
		}
		switch {
		case g == 0:
			return unalloc, 0, k, nil
		case !e.allocated(g):
			return zeroed, 0, k, nil
		}
		if e.layout.Compressed {
			return allocated, int64(g) * format.SectorSize, k, nil
		}
		return allocated, int64(g)*format.SectorSize + rel%gb, k, nil
	}
	gt := int64(e.gd[l1])
	if gt == 0 {
		// The whole table's span is unallocated.
		span := e.layout.L1EntrySecs * format.SectorSize
		return unalloc, 0, min(n, span-rel%span), nil
	}
	at := gt*format.SectorSize + 4*l2
	if at+4 > e.fileLen {
		return 0, 0, k, errPastEOF
	}
	var b [4]byte
	if err := block.ReadAt(e.file, b[:], at); err != nil {
		return 0, 0, k, err
	}
	g := int64(format.Entry(b[:], 0))
	switch {
	case g == 0:
		return unalloc, 0, k, nil
	case g == format.GTEZeroed && e.layout.ZeroGrain:
		return zeroed, 0, k, nil
	}
	host = g * format.SectorSize
	if host >= e.fileLen {
		return 0, 0, k, errPastEOF
	}
	if !e.layout.Compressed {
		host += rel % gb
	}
	return allocated, host, k, nil
}

// find is the extent holding guest offset off (< size).
func (d *Disk) find(off int64) *extent {
	lo, hi := 0, len(d.extents)
	for lo < hi {
		m := (lo + hi) / 2
		if e := &d.extents[m]; off >= e.start+e.size {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return &d.extents[lo]
}

// readCompressed inflates the part of a compressed grain at host that
// dst covers, from byte skip of the grain (format's KF5).
func (e *extent) readCompressed(host, skip int64, dst []byte) error {
	gb := e.layout.GrainBytes()
	src, size := host, 2*gb
	if e.layout.Marker {
		var mb [format.MarkerSize]byte
		if err := block.ReadAt(e.file, mb[:], host); err != nil {
			return err
		}
		m, err := format.ParseMarker(mb[:], gb)
		if err != nil {
			return err
		}
		src, size = host+format.MarkerSize, int64(m.Size)
	}
	if src+size > e.fileLen && e.sw == nil { // a writable image's grains were checked or are its own (KD8)
		if e.layout.Marker {
			return errPastEOF
		}
		size = e.fileLen - src
	}
	r := io.NewSectionReader(block.ReaderAt{D: e.file}, src, size)
	return format.Inflate(bufio.NewReaderSize(r, int(min(size, 64<<10))), gb, skip, dst)
}

// Readv implements block.Device (KD4). The Disk's state is fixed since
// Open, so reads take no lock (KD2).
func (d *Disk) Readv(off int64, bufs [][]byte) error {
	if d.Closed() {
		return block.ErrClosed
	}
	total := block.VecLen(bufs)
	if err := block.CheckRange(off, total); err != nil {
		return err
	}
	var c block.Cursor
	for done := int64(0); done < total; {
		pos := off + done
		kind, host, n := unalloc, int64(0), total-done
		var e *extent
		if pos < d.size {
			e = d.find(pos)
			var err error
			if kind, host, n, err = e.lookup(pos, n); err != nil {
				return err
			}
		}
		sub := c.Next(bufs, n)
		switch {
		case kind == unalloc && d.parent != nil:
			if err := d.readParent(pos, sub); err != nil {
				return err
			}
		case kind != allocated:
			for _, b := range sub {
				clear(b)
			}
		case e.layout.Compressed && !e.flat:
			skip := (pos - e.start) % e.layout.GrainBytes()
			tmp := sub[0]
			if len(sub) > 1 {
				tmp = make([]byte, n)
			}
			if err := e.readCompressed(host, skip, tmp); err != nil {
				return err
			}
			if len(sub) > 1 {
				for i, p := 0, 0; i < len(sub); i++ {
					p += copy(sub[i], tmp[p:])
				}
			}
		default:
			if err := e.file.Readv(host, sub); err != nil {
				return err
			}
		}
		done += n
	}
	return nil
}

// readParent reads an unallocated run at off from the parent (KD6):
// zeros past the parent's end.
func (d *Disk) readParent(off int64, sub [][]byte) error {
	if !d.cidValid {
		return ErrParentCID
	}
	in := max(0, d.parent.size-off)
	var head [][]byte
	for _, b := range sub {
		if in == 0 {
			clear(b)
			continue
		}
		if int64(len(b)) > in {
			head = append(head, b[:in])
			clear(b[in:])
			in = 0
			continue
		}
		head = append(head, b)
		in -= int64(len(b))
	}
	if len(head) == 0 {
		return nil
	}
	return d.parent.Readv(off, head)
}

// Parent is the open parent image, nil when there is none or it was
// not opened (NoParent).
func (d *Disk) Parent() *Disk { return d.parent }

// ParentHint is parentFileNameHint as the descriptor gives it, and
// ParentPath the file it names: qemu-img info's backing file and its
// full name. Both are "" without a parent.
func (d *Disk) ParentHint() string { return d.parentHint }
func (d *Disk) ParentPath() string { return d.parentPath }

// CreateType is the image's create type as qemu-img info shows it.
func (d *Disk) CreateType() string { return d.createType }

// CID and ParentCID are the descriptor's content IDs.
func (d *Disk) CID() uint32       { return d.cid.Load() }
func (d *Disk) ParentCID() uint32 { return d.pcid }

// ExtentInfo is one extent as qemu-img info shows it.
type ExtentInfo struct {
	Filename    string
	Format      string // the descriptor's type, "" for a monolithic image
	VirtualSize int64
	ClusterSize int64 // 0 for a flat extent
	Compressed  bool
}

// Extents lists the image's extents for qemu-img info.
func (d *Disk) Extents() []ExtentInfo {
	out := make([]ExtentInfo, len(d.extents))
	for i, e := range d.extents {
		out[i] = ExtentInfo{Filename: e.name, Format: e.typ, VirtualSize: e.size, Compressed: e.layout.Compressed}
		if !e.flat {
			out[i].ClusterSize = e.layout.GrainBytes()
		}
	}
	return out
}

// ClusterSize is qemu-img info's cluster_size (vmdk_co_get_info): the
// first extent's grain when every extent is of its kind, else 0.
func (d *Disk) ClusterSize() int64 {
	if len(d.extents) == 0 {
		return 0 // QEMU fails an assertion (s->num_extents)
	}
	f := d.extents[0]
	for _, e := range d.extents[1:] {
		if e.flat != f.flat || e.layout.Compressed != f.layout.Compressed ||
			(!f.flat && e.layout.GrainSectors != f.layout.GrainSectors) {
			return 0
		}
	}
	if f.flat {
		return 0
	}
	return f.layout.GrainBytes()
}

// ExtentFiles are the names of the extent files other than the image
// file itself (qemu-img info's disk size adds theirs).
func (d *Disk) ExtentFiles() []string {
	var out []string
	for _, e := range d.extents {
		if e.own {
			out = append(out, e.name)
		}
	}
	return out
}

// Size implements block.Device: the extents' sizes added.
func (d *Disk) Size() (int64, error) {
	if d.Closed() {
		return 0, block.ErrClosed
	}
	return d.size, nil
}

// Caps implements block.Device: no zeroing flags (KD1); MayUnmap only
// when writable (KD8).
func (d *Disk) Caps() block.Caps {
	c := d.file.Caps()
	out := block.Caps{Align: 1, MemAlign: 1, Media: c.Media, Fixed: true}
	if d.w != nil {
		out.ZeroFlags = block.MayUnmap
	}
	return out
}

func (d *Disk) closeExtents() {
	for _, e := range d.extents {
		if e.own {
			e.file.Close()
		}
	}
	if d.parent != nil {
		d.parent.Close()
	}
}

// Close implements block.Device: it closes the file and the extent
// files it opened.
func (d *Disk) Close() error {
	if d.Closed() {
		return block.ErrClosed
	}
	err := d.closeWriter()
	if d.MarkClosed() {
		return block.ErrClosed
	}
	d.closeExtents()
	return errors.Join(err, d.file.Close())
}

// GrainSize is the first extent's grain in bytes, 0 for a flat one or
// an image of no extent.
func (d *Disk) GrainSize() int64 {
	if len(d.extents) == 0 || d.extents[0].flat {
		return 0
	}
	return d.extents[0].layout.GrainBytes()
}
