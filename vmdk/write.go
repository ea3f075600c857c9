package vmdk

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vmdk/format"
)

// ErrOutOfRange is a write past the virtual size (QEMU refuses it too).
var ErrOutOfRange = fmt.Errorf("vmdk: write past the end of the disk: %w", block.ErrRange)

// ErrNoResize is Truncate's refusal, in QEMU's words: block.ErrNoResize.
var ErrNoResize = block.ErrNoResize

// writer is what a writable Disk keeps besides the read-only state
// (KD8-KD11). Only a monolithicSparse image is writable: one hosted,
// uncompressed sparse extent, no parent.
type writer struct {
	mu sync.Mutex
	// free is where the next grain goes: past every byte the file held
	// at Open and every grain given out since (KD9).
	free int64
	// sized is a length the file is known to have reached (Flush makes
	// it reach free before any entry is written, KD10).
	sized int64
	// fresh are the grains allocated since the last Flush whose entries
	// are not on disk yet (KD10).
	fresh []int64
	// streaming are the compressed grains being written (KD12).
	streaming map[int64]bool

	cidMu   sync.Mutex
	cidDone atomic.Bool // the descriptor's CID was changed (KD11)

	flushMu sync.Mutex // one Flush at a time (KD10)
	// table is every grain table entry as on disk, or as the running
	// Flush writes it: only Flush changes it.
	table []byte
	// gts and rgts are the sectors of the grain tables of the directory
	// and of the redundant one (nil without one), by directory entry.
	gts, rgts []uint32
}

// maxWritableGTEs bounds the grain table entries of a writable image,
// all held in memory (8 bytes each with the on-disk copy): those of a
// 2 TiB image of 64 KiB grains.
const maxWritableGTEs = 1 << 25

// openWriter makes d writable (KD8): it loads every grain table entry
// (reads and writes then use the copy in memory) and refuses images it
// cannot write without risk.
func (d *Disk) openWriter() error {
	e := &d.extents[0]
	l := e.layout
	if len(d.extents) != 1 || e.flat || e.file != d.file || (d.createType != "monolithicSparse" && d.createType != "streamOptimized") ||
		(l.Compressed && !l.Marker) {
		return format.Unsupported("qring writes only monolithicSparse and streamOptimized VMDK images (this one is %s): open it read-only", d.createType)
	}
	if d.parentHint != "" {
		return format.Unsupported("qring does not write VMDK images with a parent: open it read-only")
	}
	if l.GrainSectors < 1 || l.GTEs < 1 {
		return format.Unsupported("qring does not write VMDK images with empty grains or grain tables: open it read-only")
	}
	h, err := d.header()
	if err != nil {
		return err
	}
	if h.GDOffset == format.GDAtEnd {
		// New grains would go past the footer, which must end the file.
		return format.Unsupported("qring does not write VMDK images whose grain directory is in a footer: open it read-only")
	}
	w := &writer{gts: e.gd}
	n := l.L1Size * l.GTEs
	// Every table lies in the file, none over another (checked below):
	// a file too short to hold them all is refused before anything is
	// sized by them, and so is one whose tables would take more memory
	// than a 2 TiB image's (KD8).
	if n > maxWritableGTEs || 4*n > e.fileLen {
		return d.refuse(fmt.Sprintf("its %d grain table entries do not fit the file or are too many to write (at most %d)", n, int64(maxWritableGTEs)))
	}
	if n*l.GrainBytes() < e.size {
		// QEMU's 32-bit directory size wrapped: the tables map less
		// than the disk (a write past them would find no entry).
		return d.refuse(fmt.Sprintf("its grain tables map %d bytes of its %d", n*l.GrainBytes(), e.size))
	}
	w.table = make([]byte, 4*n)
	e.mem = make([]atomic.Uint32, n)
	tb := l.GTEs * 4
	type span struct{ a, b int64 }
	// The descriptor as changeCID rewrites it: DescSize bytes at sector
	// 1, whatever the header says (QEMU's vmdk_write_cid).
	spans := []span{{0, format.HeaderSize},
		{format.SectorSize, format.SectorSize + format.DescSize},
		{l.GDOffset, l.GDOffset + 4*l.L1Size}}
	if h.Flags&format.FlagRGD != 0 && h.RGDOffset != 0 {
		rgd := int64(h.RGDOffset) * format.SectorSize
		if rgd+4*l.L1Size > e.fileLen {
			return d.refuse("its redundant grain directory lies past the end of the file")
		}
		b := make([]byte, 4*l.L1Size)
		if err := block.ReadAt(d.file, b, rgd); err != nil {
			return err
		}
		w.rgts = make([]uint32, l.L1Size)
		for i := range w.rgts {
			w.rgts[i] = format.Entry(b, i)
		}
		spans = append(spans, span{rgd, rgd + 4*l.L1Size})
	}
	for i, gt := range w.gts {
		at := int64(gt) * format.SectorSize
		if gt == 0 || at+tb > e.fileLen {
			return d.refuse(fmt.Sprintf("grain table %d is not allocated or lies past the end of the file", i))
		}
		if err := block.ReadAt(d.file, w.table[int64(i)*tb:int64(i+1)*tb], at); err != nil {
			return err
		}
		spans = append(spans, span{at, at + tb})
		if w.rgts != nil {
			r := int64(w.rgts[i]) * format.SectorSize
			if w.rgts[i] == 0 || r+tb > e.fileLen {
				return d.refuse(fmt.Sprintf("redundant grain table %d is not allocated or lies past the end of the file", i))
			}
			spans = append(spans, span{r, r + tb})
		}
	}
	gb := l.GrainBytes()
	for i := range e.mem {
		g := format.Entry(w.table, i)
		e.mem[i].Store(g)
		if g == 0 || (g == format.GTEZeroed && l.ZeroGrain) {
			continue
		}
		at := int64(g) * format.SectorSize
		n := gb
		if l.Compressed {
			// A compressed grain's marker says how far it goes.
			var mb [format.MarkerSize]byte
			if at+format.MarkerSize > e.fileLen {
				return d.refuse(fmt.Sprintf("grain %d lies past the end of the file", i))
			}
			if err := block.ReadAt(d.file, mb[:], at); err != nil {
				return err
			}
			m, err := format.ParseMarker(mb[:], gb)
			if err != nil {
				return d.refuse(fmt.Sprintf("grain %d: %v", i, err))
			}
			n = format.MarkerSize + int64(m.Size)
		}
		if at+n > e.fileLen {
			return d.refuse(fmt.Sprintf("grain %d lies past the end of the file", i))
		}
		spans = append(spans, span{at, at + n})
	}
	slices.SortFunc(spans, func(x, y span) int { return cmp.Compare(x.a, y.a) })
	for i := 1; i < len(spans); i++ {
		if spans[i].a < spans[i-1].b {
			return d.refuse(fmt.Sprintf("grains or metadata overlap at offset %d", spans[i].a))
		}
	}
	// KD9: past everything the file holds, on a grain boundary from the
	// first grain (as QEMU, which rounds the file's sectors up to a
	// grain).
	w.free = (e.fileLen + gb - 1) / gb * gb
	w.sized = e.fileLen
	if w.free/format.SectorSize > 1<<32-1 {
		return d.refuse("the file reaches past 2 TiB, where no grain can start")
	}
	w.streaming = map[int64]bool{}
	d.w = w
	d.ReadOnly.Why = ""
	return nil
}

// ErrNotWritable is an image Open refused to open Writable for what it
// is (KD8: its kind, a parent, tables it cannot write safely), though it
// opens read-only; the error wrapping it says why. A failure to read the
// image is not one.
var ErrNotWritable = errors.New("vmdk: the image can only be opened read-only")

// notWritable is a refusal of Open's Writable (ErrNotWritable), worded
// by err.
type notWritable struct{ err error }

func (e notWritable) Error() string   { return e.err.Error() }
func (e notWritable) Unwrap() []error { return []error{e.err, ErrNotWritable} }

// refuse is a writable open refused for a reason in the image.
func (d *Disk) refuse(why string) error {
	return &format.Error{Msg: fmt.Sprintf("vmdk: %s: the image can only be opened read-only", why), Err: format.ErrCorrupt}
}

// header reads the extent's header again (Open keeps only its layout).
func (d *Disk) header() (format.Header, error) {
	b := make([]byte, format.HeaderSize)
	if err := block.ReadAt(d.file, b, 0); err != nil {
		return format.Header{}, err
	}
	return format.ParseHeader(b)
}

// allocated reports whether grain table entry g maps a grain.
func (e *extent) allocated(g uint32) bool {
	return g != 0 && (g != format.GTEZeroed || !e.layout.ZeroGrain)
}

// grain returns grain gi's sector, allocating it at free first if need
// be (KD9): a new grain's space lies past everything written, so it
// reads as zeros where nothing is written into it, and its entry is
// visible to reads at once.
func (d *Disk) grain(e *extent, gi int64) (uint32, error) {
	if g := e.mem[gi].Load(); e.allocated(g) {
		return g, nil
	}
	w := d.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if g := e.mem[gi].Load(); e.allocated(g) {
		return g, nil
	}
	if w.free/format.SectorSize > 1<<32-1 {
		return 0, fmt.Errorf("vmdk: no grain can start past 2 TiB in the file: %w", block.ErrNotSupported)
	}
	g := uint32(w.free / format.SectorSize)
	w.free += e.layout.GrainBytes()
	e.mem[gi].Store(g)
	w.fresh = append(w.fresh, gi)
	return g, nil
}

// zeroGrain makes grain gi a zeroed grain (format.GTEZeroed): it reads
// as zeros at once, its entry goes to disk at the next Flush (KD10), and
// the space of the grain it mapped, if any, leaks.
func (d *Disk) zeroGrain(gi int64) {
	w := d.w
	w.mu.Lock()
	defer w.mu.Unlock()
	d.extents[0].mem[gi].Store(format.GTEZeroed)
	w.fresh = append(w.fresh, gi)
}

// Refusals of a streamOptimized image's writes, as QEMU's (KD12): a
// grain is written once, whole (the last one up to the disk's end).
var (
	ErrStreamPartial   = fmt.Errorf("vmdk: a streamOptimized image takes whole grains only: %w", syscall.EINVAL)
	ErrStreamAllocated = fmt.Errorf("vmdk: Could not write to allocated cluster for streamOptimized: %w", syscall.EIO)
)

// streamWritten reports whether grain gi of a streamOptimized image is
// written or being written.
func (d *Disk) streamWritten(e *extent, gi int64) bool {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	return e.allocated(e.mem[gi].Load()) || d.w.streaming[gi]
}

// writeCompressed writes one whole grain of a streamOptimized image at
// guest offset pos: deflated behind its marker, at free, its entry set
// once the bytes are written (KD12).
func (d *Disk) writeCompressed(e *extent, pos int64, data [][]byte) error {
	gi := pos / e.layout.GrainBytes()
	b := format.EncodeGrain(uint64(pos/format.SectorSize), data)
	w := d.w
	w.mu.Lock()
	if e.allocated(e.mem[gi].Load()) || w.streaming[gi] {
		w.mu.Unlock()
		return ErrStreamAllocated
	}
	if w.free/format.SectorSize > 1<<32-1 {
		w.mu.Unlock()
		return fmt.Errorf("vmdk: no grain can start past 2 TiB in the file: %w", block.ErrNotSupported)
	}
	at := w.free
	w.free += int64(len(b))
	w.streaming[gi] = true
	w.mu.Unlock()
	err := d.file.Writev(at, [][]byte{b})
	w.mu.Lock()
	delete(w.streaming, gi)
	if err == nil {
		e.mem[gi].Store(uint32(at / format.SectorSize))
		w.fresh = append(w.fresh, gi)
	}
	w.mu.Unlock()
	return err
}

// changeCID gives the image a new CID before its first change since
// Open is issued, as QEMU's vmdk_pwritev does after it (KD11): an image
// made on top of this one (its parentCID) sees that it changed. The new
// CID's hexadecimal form is as long as the old one's, so only those
// bytes of the descriptor change, in place, and durably.
func (d *Disk) changeCID() error {
	w := d.w
	if w.cidDone.Load() {
		return nil
	}
	w.cidMu.Lock()
	defer w.cidMu.Unlock()
	if w.cidDone.Load() {
		return nil
	}
	// The embedded descriptor is at sector 1, whatever the header says,
	// as QEMU reads and writes it (vmdk_open_vmdk4's desc_offset).
	at := int64(format.SectorSize)
	old := make([]byte, format.DescSize)
	if err := block.ReadAt(d.file, old, at); err != nil {
		return err
	}
	cid := newCID(d.cid.Load())
	desc, ok := format.RewriteCID(old, cid)
	if !ok {
		return fmt.Errorf("vmdk: the descriptor has no parentCID: %w", format.ErrCorrupt)
	}
	for s := 0; s < len(desc); s += format.SectorSize {
		if string(desc[s:s+format.SectorSize]) != string(old[s:s+format.SectorSize]) {
			if err := d.file.Writev(at+int64(s), [][]byte{desc[s : s+format.SectorSize]}); err != nil {
				return err
			}
		}
	}
	if err := d.file.Flush(); err != nil {
		return err
	}
	d.cid.Store(cid)
	w.cidDone.Store(true)
	return nil
}

// newCID is a random CID other than old whose hexadecimal form is as
// long as old's.
func newCID(old uint32) uint32 {
	digits := len(fmt.Sprintf("%x", old))
	for {
		var b [4]byte
		rand.Read(b[:])
		c := binary.LittleEndian.Uint32(b[:])
		if digits < 8 {
			c &= 1<<(4*digits) - 1
			if digits > 1 {
				c |= 1 << (4*digits - 4) // no leading zero digit
			}
		} else {
			c |= 1 << 28
		}
		if c != old {
			return c
		}
	}
}

// checkWrite checks a write of n bytes at off (KD8).
func (d *Disk) checkWrite(off, n int64) error {
	if d.Closed() {
		return block.ErrClosed
	}
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if off+n > d.size {
		return ErrOutOfRange
	}
	return nil
}

// Writev implements block.Device: each grain's part goes to the grain,
// allocated first if need be (KD9).
func (d *Disk) Writev(off int64, bufs [][]byte) error {
	if d.w == nil {
		return d.ReadOnly.Writev(off, bufs)
	}
	total := block.VecLen(bufs)
	if err := d.checkWrite(off, total); err != nil || total == 0 {
		return err
	}
	e := &d.extents[0]
	gb := e.layout.GrainBytes()
	if e.layout.Compressed && (off%gb != 0 || (total%gb != 0 && off+total != d.size)) {
		// Refused before the CID changes: nothing of it is written.
		// QEMU asks whether the first grain is written before
		// anything else: then EIO, not EINVAL.
		if d.streamWritten(e, off/gb) {
			return ErrStreamAllocated
		}
		return ErrStreamPartial
	}
	if err := d.changeCID(); err != nil {
		return err
	}
	var c block.Cursor
	for done := int64(0); done < total; {
		pos := off + done
		gi, in := pos/gb, pos%gb
		n := min(total-done, gb-in)
		if e.layout.Compressed {
			if in != 0 || (n < gb && pos+n != d.size) {
				return ErrStreamPartial
			}
			if err := d.writeCompressed(e, pos, c.Next(bufs, n)); err != nil {
				return err
			}
			done += n
			continue
		}
		g, err := d.grain(e, gi)
		if err != nil {
			return err
		}
		if err := d.file.Writev(int64(g)*format.SectorSize+in, c.Next(bufs, n)); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// WriteZeroes implements block.Device. In an image with zeroed grains
// (zeroed_grain=on) a whole grain becomes a zeroed grain, as in QEMU.
// Otherwise unallocated and zeroed grains read as zeros already and stay
// as they are (QEMU writes zeros into new grains there); an allocated
// grain's range is zeroed in the file. Allocate is refused (ErrNotSupported):
// grains cannot be reserved without writing them.
func (d *Disk) WriteZeroes(off, n int64, flags block.Flags) error {
	if d.w == nil {
		return d.ReadOnly.WriteZeroes(off, n, flags)
	}
	if err := d.checkWrite(off, n); err != nil || n == 0 {
		return err
	}
	if flags&block.Allocate != 0 {
		return fmt.Errorf("vmdk: zeroing grains efficiently: %w", block.ErrNotSupported)
	}
	e := &d.extents[0]
	gb := e.layout.GrainBytes()
	for done := int64(0); done < n; {
		pos := off + done
		gi, in := pos/gb, pos%gb
		k := min(n-done, gb-in)
		done += k
		g := e.mem[gi].Load()
		if e.layout.Compressed && e.allocated(g) {
			return ErrStreamAllocated // a compressed grain is never rewritten
		}
		if e.layout.ZeroGrain && in == 0 && k == gb && g != format.GTEZeroed {
			// A whole grain of an image with zeroed grains: its entry
			// says so, as QEMU's does (KD9).
			if err := d.changeCID(); err != nil {
				return err
			}
			d.zeroGrain(gi)
			continue
		}
		if !e.allocated(g) {
			// A write allocating it meanwhile leaves this range
			// reading as zeros too: the new grain's space is fresh.
			continue
		}
		if err := d.changeCID(); err != nil {
			return err
		}
		if err := d.file.WriteZeroes(int64(g)*format.SectorSize+in, k, flags&block.MayUnmap); err != nil {
			return err
		}
	}
	return nil
}

// Discard implements block.Discarder as QEMU's vmdk driver, which has
// no discard: the bytes stay (a discard is a hint).
func (d *Disk) Discard(off, n int64) error {
	if d.w == nil {
		return d.ReadOnly.WriteZeroes(off, n, 0)
	}
	return d.checkWrite(off, n)
}

// Truncate implements block.Device: qring does not resize VMDK images.
func (d *Disk) Truncate(size int64) error {
	if d.w == nil {
		return d.ReadOnly.Truncate(size)
	}
	if d.Closed() {
		return block.ErrClosed
	}
	return ErrNoResize
}

// Flush implements block.Device (B6, KD10): the grains allocated since
// the last Flush get their entries on disk only once the file reaches
// past them and their bytes are durable; a second flush makes the
// entries durable.
func (d *Disk) Flush() error {
	w := d.w
	if w == nil {
		return d.ReadOnly.Flush()
	}
	if d.Closed() {
		return block.ErrClosed
	}
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	w.mu.Lock()
	fresh := w.fresh
	w.fresh = nil
	// The entries as they are now, under mu with the file grown past
	// them below: one changed later (a grain zeroed, then written anew)
	// is in w.fresh again and waits for the next Flush.
	entries := make([]uint32, len(fresh))
	for i, gi := range fresh {
		entries[i] = d.extents[0].mem[gi].Load()
	}
	var err error
	if len(fresh) > 0 && w.sized < w.free {
		// Under mu: no write reaches past free, so growing the file to
		// it never cuts one short (a partly written last grain).
		if err = d.file.Truncate(w.free); err == nil {
			w.sized = w.free
		}
	}
	w.mu.Unlock()
	if err == nil {
		err = d.file.Flush()
	}
	if err == nil && len(fresh) > 0 {
		err = d.writeEntries(fresh, entries)
		if err == nil {
			err = d.file.Flush()
		}
	}
	if err != nil {
		w.mu.Lock()
		w.fresh = append(fresh, w.fresh...)
		w.mu.Unlock()
	}
	return err
}

// writeEntries writes entries[i], grain grains[i]'s, into its table,
// and into the redundant table (KD10), in runs of nearby entries of one
// table.
func (d *Disk) writeEntries(grains []int64, entries []uint32) error {
	w := d.w
	e := &d.extents[0]
	for i, gi := range grains {
		binary.LittleEndian.PutUint32(w.table[4*gi:], entries[i])
	}
	grains = slices.Clone(grains)
	slices.Sort(grains)
	gtes := e.layout.GTEs
	const near = format.SectorSize / 4 // entries in a sector
	for i := 0; i < len(grains); {
		t := grains[i] / gtes
		j := i + 1
		for j < len(grains) && grains[j]/gtes == t && grains[j]-grains[j-1] <= near {
			j++
		}
		a, b := grains[i]*4, grains[j-1]*4+4
		in := a - t*gtes*4
		for _, tables := range [][]uint32{w.gts, w.rgts} {
			if tables == nil {
				continue
			}
			if err := d.file.Writev(int64(tables[t])*format.SectorSize+in, [][]byte{w.table[a:b]}); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

// closeWriter flushes a writable Disk before Close (QEMU flushes an
// image it closes).
func (d *Disk) closeWriter() error {
	if d.w == nil {
		return nil
	}
	err := d.Flush()
	if errors.Is(err, block.ErrClosed) {
		return nil
	}
	return err
}
