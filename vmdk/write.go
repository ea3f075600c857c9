package vmdk

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
// (KD8-KD11); each sparse extent's own state is its sparseWriter.
type writer struct {
	cidMu   sync.Mutex
	cidDone atomic.Bool // the descriptor's CID was changed (KD11)

	flushMu sync.Mutex // one Flush at a time (KD10)
}

// sparseWriter is a writable sparse extent's state (KD8-KD10, KD12).
type sparseWriter struct {
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
	// copying are the new grains being filled from the parent (KD13),
	// each closed when its grain is mapped (or given up).
	copying map[int64]chan struct{}

	// tables are the extent's grain table entries (KD8).
	tables *grainTables
}

// openWriter makes d writable (KD8): it reads every grain table of its
// sparse extents, refusing images it cannot write without risk; a
// write loads the tables it needs (grainTables).
func (d *Disk) openWriter() error {
	switch d.createType {
	case "monolithicSparse", "streamOptimized", format.MonolithicFlat, format.TwoGbMaxExtentFlat, format.TwoGbMaxExtentSparse:
	default:
		return format.Unsupported("qring does not write %s VMDK images: open it read-only", d.createType)
	}
	if d.parentHint != "" && d.parent == nil {
		return format.Unsupported("qring writes a VMDK image with a parent only with its parent open (new grains copy its bytes): open it read-only")
	}
	hosted := len(d.extents) == 1 && d.extents[0].file == d.file
	if !hosted {
		if err := d.distinctFiles(); err != nil {
			return err
		}
	}
	loaded := &limit{}
	for i := range d.extents {
		e := &d.extents[i]
		if e.flat {
			continue
		}
		if e.layout.Compressed && (!hosted || !e.layout.Marker) {
			return format.Unsupported("qring writes compressed VMDK extents only as streamOptimized images: open it read-only")
		}
		if err := d.openSparse(e, hosted, loaded); err != nil {
			return err
		}
	}
	d.w = &writer{}
	d.ReadOnly.Why = ""
	return nil
}

// distinctFiles refuses a descriptor file whose extents share a file
// with each other or with the descriptor (KD8): their writes would land
// in one another's bytes (QEMU writes them all the same). Each name is
// looked up once (a descriptor may name thousands of files).
func (d *Disk) distinctFiles() error {
	seen := map[string]bool{}
	for i, name := range append([]string{d.descName}, d.extentNames()...) {
		keys := []string{"name " + filepath.Clean(name)}
		if fi, err := os.Stat(name); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				keys = append(keys, fmt.Sprintf("file %d %d", st.Dev, st.Ino))
			}
		}
		for _, k := range keys {
			if seen[k] && i > 0 {
				return d.refuse(fmt.Sprintf("extent file %s is named twice or is the descriptor file", name))
			}
			seen[k] = true
		}
	}
	return nil
}

// extentNames are the extents' file names, in order.
func (d *Disk) extentNames() []string {
	out := make([]string, len(d.extents))
	for i, e := range d.extents {
		out[i] = e.name
	}
	return out
}

// openSparse makes sparse extent e writable (KD8): its tables loaded,
// and refused where a write could land on metadata or another grain.
// hosted is an image of this one extent, its descriptor embedded;
// loaded counts the entries the Disk's writes load.
func (d *Disk) openSparse(e *extent, hosted bool, loaded *limit) error {
	l := e.layout
	if l.GrainSectors < 1 || l.GTEs < 1 {
		return format.Unsupported("qring does not write VMDK images with empty grains or grain tables: open it read-only")
	}
	h, err := readHeader(e.file)
	if err != nil {
		return err
	}
	if h.Version == 3 && h.CompressAlgo != format.CompressDeflate {
		// As QEMU's vmdk_open_vmdk4: version 3 without deflate is
		// VMware's changed block tracking, which QEMU does not write.
		return &format.Error{Msg: "VMDK version 3 must be read only", Err: format.ErrUnsupported}
	}
	if h.GDOffset == format.GDAtEnd {
		// New grains would go past the footer, which must end the file.
		return format.Unsupported("qring does not write VMDK images whose grain directory is in a footer: open it read-only")
	}
	n := l.L1Size * l.GTEs
	// Every table lies in the file, none over another (checked below):
	// a file too short to hold them all is refused before anything is
	// sized by them (KD8).
	if 4*n > e.fileLen {
		return d.refuse(fmt.Sprintf("the %d grain table entries of %s do not fit its file", n, e.name))
	}
	if n*l.GrainBytes() < e.size {
		// QEMU's 32-bit directory size wrapped: the tables map less
		// than the disk (a write past them would find no entry).
		return d.refuse(fmt.Sprintf("its grain tables map %d bytes of its %d", n*l.GrainBytes(), e.size))
	}
	tb := l.GTEs * 4
	type span struct{ a, b int64 }
	spans := []span{{0, format.HeaderSize}, {l.GDOffset, l.GDOffset + 4*l.L1Size}}
	if hosted {
		// The descriptor as changeCID rewrites it: DescSize bytes at
		// sector 1, whatever the header says (QEMU's vmdk_write_cid).
		spans = append(spans, span{format.SectorSize, format.SectorSize + format.DescSize})
	}
	var rgts []uint32
	if rgd := l.RGDOffset; rgd != 0 {
		// QEMU writes each new grain's entry into the redundant
		// tables too: a directory past the end of the file reads as
		// zeros there and puts entries into the header (Open refused
		// one QEMU cannot read; 0 is none, as in QEMU).
		if rgd+4*l.L1Size > e.fileLen {
			return d.refuse("its redundant grain directory lies past the end of the file")
		}
		b := make([]byte, 4*l.L1Size)
		if err := block.ReadAt(e.file, b, rgd); err != nil {
			return err
		}
		rgts = make([]uint32, l.L1Size)
		for i := range rgts {
			rgts[i] = format.Entry(b, i)
		}
		spans = append(spans, span{rgd, rgd + 4*l.L1Size})
	}
	for i, gt := range e.gd {
		at := int64(gt) * format.SectorSize
		if gt == 0 || at+tb > e.fileLen {
			return d.refuse(fmt.Sprintf("grain table %d is not allocated or lies past the end of the file", i))
		}
		spans = append(spans, span{at, at + tb})
		if rgts != nil {
			r := int64(rgts[i]) * format.SectorSize
			if rgts[i] == 0 || r+tb > e.fileLen {
				return d.refuse(fmt.Sprintf("redundant grain table %d is not allocated or lies past the end of the file", i))
			}
			spans = append(spans, span{r, r + tb})
		}
	}
	// Every grain the tables map, read a run of adjacent tables at a
	// time and not kept: a write loads its table again when it needs
	// it (grainTables), nothing having changed it meanwhile.
	gb := l.GrainBytes()
	// Grains that overlap nothing each take a grain of the file (a
	// compressed one a sector of its own at least): more than fit are
	// refused before their spans take 16 bytes each of memory.
	unit, grains := gb, int64(0)
	if l.Compressed {
		unit = format.SectorSize
	}
	var buf []byte
	for i := 0; i < len(e.gd); {
		j := i + 1
		for j < len(e.gd) && int64(j-i)*tb < 1<<20 && int64(e.gd[j])*format.SectorSize == int64(e.gd[j-1])*format.SectorSize+tb {
			j++
		}
		if holes(e.file, int64(e.gd[i])*format.SectorSize, int64(j-i)*tb) {
			// Tables in a hole of the file map nothing (a new image's
			// terabytes of them).
			i = j
			continue
		}
		buf = slices.Grow(buf[:0], int(int64(j-i)*tb))[:int64(j-i)*tb]
		if err := block.ReadAt(e.file, buf, int64(e.gd[i])*format.SectorSize); err != nil {
			return err
		}
		for k := range int64(j-i) * l.GTEs {
			g := format.Entry(buf, int(k))
			gi := int64(i)*l.GTEs + k
			if g == 0 || (g == format.GTEZeroed && l.ZeroGrain) {
				continue
			}
			at := int64(g) * format.SectorSize
			n := gb
			if l.Compressed {
				// A compressed grain's marker says how far it goes.
				var mb [format.MarkerSize]byte
				if at+format.MarkerSize > e.fileLen {
					return d.refuse(fmt.Sprintf("grain %d lies past the end of the file", gi))
				}
				if err := block.ReadAt(e.file, mb[:], at); err != nil {
					return err
				}
				m, err := format.ParseMarker(mb[:], gb)
				if err != nil {
					return d.refuse(fmt.Sprintf("grain %d: %v", gi, err))
				}
				n = format.MarkerSize + int64(m.Size)
			}
			if at+n > e.fileLen {
				return d.refuse(fmt.Sprintf("grain %d lies past the end of the file", gi))
			}
			if grains++; grains > e.fileLen/unit {
				return d.refuse(fmt.Sprintf("grain %d: more grains than the file holds: they overlap", gi))
			}
			spans = append(spans, span{at, at + n})
		}
		i = j
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
	w := &sparseWriter{
		free:      (e.fileLen + gb - 1) / gb * gb,
		sized:     e.fileLen,
		streaming: map[int64]bool{},
		copying:   map[int64]chan struct{}{},
		tables: &grainTables{file: e.file, gtes: l.GTEs, gts: e.gd, rgts: rgts,
			tabs: make([]atomic.Pointer[gtable], l.L1Size), loaded: loaded},
	}
	if w.free/format.SectorSize > 1<<32-1 {
		return d.refuse("the file reaches past 2 TiB, where no grain can start")
	}
	e.sw = w
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

// readHeader reads a sparse extent's header again (Open keeps only its
// layout).
func readHeader(f block.Device) (format.Header, error) {
	b := make([]byte, format.HeaderSize)
	if err := block.ReadAt(f, b, 0); err != nil {
		return format.Header{}, err
	}
	return format.ParseHeader(b)
}

// allocated reports whether grain table entry g maps a grain.
func (e *extent) allocated(g uint32) bool {
	return g != 0 && (g != format.GTEZeroed || !e.layout.ZeroGrain)
}

// grain returns grain gi's sector in sparse extent e, allocating it at
// free first if need be (KD9): a new grain's space lies past everything
// written, so it reads as zeros where nothing is written into it, and
// its entry is visible to reads at once. Over a parent, a new grain
// that read through to it gets the parent's bytes first and is mapped
// only then (KD13).
func (d *Disk) grain(e *extent, gi int64) (uint32, error) {
	w := e.sw
	if g, ok := w.tables.peek(gi); ok && e.allocated(g) {
		return g, nil
	}
	w.mu.Lock()
	w.waitCopy(gi)
	p, err := w.tables.entry(gi)
	if err != nil {
		w.mu.Unlock()
		return 0, err
	}
	if g := p.Load(); e.allocated(g) {
		w.mu.Unlock()
		return g, nil
	}
	if w.free/format.SectorSize > 1<<32-1 {
		w.mu.Unlock()
		return 0, fmt.Errorf("vmdk: no grain can start past 2 TiB in the file: %w", block.ErrNotSupported)
	}
	if d.parent != nil && !d.cidValid {
		// QEMU refuses to allocate over a changed parent too.
		w.mu.Unlock()
		return 0, ErrParentCID
	}
	g := uint32(w.free / format.SectorSize)
	w.free += e.layout.GrainBytes()
	if d.parent == nil || p.Load() != 0 {
		// No parent, or a zeroed grain: it reads as zeros, and so does
		// the new grain's space.
		p.Store(g)
		w.fresh = append(w.fresh, gi)
		w.tables.fresh(gi)
		w.mu.Unlock()
		return g, nil
	}
	done := make(chan struct{})
	w.copying[gi] = done
	w.mu.Unlock()
	err = d.copyUp(e, gi, g)
	w.mu.Lock()
	delete(w.copying, gi)
	close(done)
	if err == nil {
		p.Store(g)
		w.fresh = append(w.fresh, gi)
		w.tables.fresh(gi)
	}
	w.mu.Unlock()
	return g, err // on error the grain's space leaks
}

// waitCopy waits, under w.mu (released while waiting), until grain gi
// is not being filled from the parent (KD13).
func (w *sparseWriter) waitCopy(gi int64) {
	for {
		done, ok := w.copying[gi]
		if !ok {
			return
		}
		w.mu.Unlock()
		<-done
		w.mu.Lock()
	}
}

// copyUp writes the parent's bytes of grain gi of e into the new grain
// at sector g (KD13): what the grain read before it is allocated.
func (d *Disk) copyUp(e *extent, gi int64, g uint32) error {
	gb := e.layout.GrainBytes()
	n := min(gb, e.size-gi*gb)
	b := make([]byte, n)
	if err := d.readParent(e.start+gi*gb, [][]byte{b}); err != nil {
		return err
	}
	return e.file.Writev(int64(g)*format.SectorSize, [][]byte{b})
}

// zeroGrain makes grain gi of e a zeroed grain (format.GTEZeroed): it
// reads as zeros at once, its entry goes to disk at the next Flush
// (KD10), and the space of the grain it mapped, if any, leaks. A grain
// being filled from the parent is mapped first, then zeroed (KD13); a
// streamOptimized grain written meanwhile is not (ErrStreamAllocated).
func (d *Disk) zeroGrain(e *extent, gi int64) error {
	w := e.sw
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitCopy(gi)
	p, err := w.tables.entry(gi)
	if err != nil {
		return err
	}
	if e.layout.Compressed && (e.allocated(p.Load()) || w.streaming[gi]) {
		// A streamOptimized grain written (or being written) since
		// WriteZeroes looked: the zeros come after it, and a written
		// grain takes none (KD12), as QEMU, which serializes them.
		return ErrStreamAllocated
	}
	p.Store(format.GTEZeroed)
	w.fresh = append(w.fresh, gi)
	w.tables.fresh(gi)
	return nil
}

// Refusals of a streamOptimized image's writes, as QEMU's (KD12): a
// grain is written once, whole (the last one up to the disk's end).
var (
	ErrStreamPartial   = fmt.Errorf("vmdk: a streamOptimized image takes whole grains only: %w", syscall.EINVAL)
	ErrStreamAllocated = fmt.Errorf("vmdk: Could not write to allocated cluster for streamOptimized: %w", syscall.EIO)
)

// streamWritten reports whether grain gi of a streamOptimized image is
// written or being written.
func (d *Disk) streamWritten(e *extent, gi int64) (bool, error) {
	e.sw.mu.Lock()
	defer e.sw.mu.Unlock()
	p, err := e.sw.tables.entry(gi)
	if err != nil {
		return false, err
	}
	return e.allocated(p.Load()) || e.sw.streaming[gi], nil
}

// streamCheck refuses a write or zeros of n bytes at off into a
// streamOptimized image (KD12) before anything changes (the CID
// included): QEMU asks whether the first grain is written (EIO), then
// whether the range is whole grains (EINVAL); a written grain further
// on is EIO too, where QEMU has written the grains before it. nil for
// other images.
func (d *Disk) streamCheck(off, n int64, zeros bool) error {
	if len(d.extents) == 0 {
		return nil
	}
	e := &d.extents[0]
	if !e.layout.Compressed || e.flat {
		return nil
	}
	gb := e.layout.GrainBytes()
	if written, err := d.streamWritten(e, off/gb); err != nil || written {
		return cmp.Or(err, ErrStreamAllocated)
	}
	if d.parent != nil && !d.cidValid && !(zeros && e.layout.ZeroGrain) {
		// A new grain over a changed parent, as in grain (KD13):
		// QEMU refuses it before it writes (zeroed grains' entries
		// aside).
		return ErrParentCID
	}
	if off%gb != 0 || (n%gb != 0 && off+n != d.size) {
		return ErrStreamPartial
	}
	for gi := off / gb; gi*gb < off+n; gi++ {
		if written, err := d.streamWritten(e, gi); err != nil || written {
			return cmp.Or(err, ErrStreamAllocated)
		}
	}
	return nil
}

// writeCompressed writes one whole grain of a streamOptimized image at
// guest offset pos: deflated behind its marker, at free, its entry set
// once the bytes are written (KD12).
func (d *Disk) writeCompressed(e *extent, pos int64, data [][]byte) error {
	gi := pos / e.layout.GrainBytes()
	b := format.EncodeGrain(uint64(pos/format.SectorSize), data)
	w := e.sw
	w.mu.Lock()
	p, err := w.tables.entry(gi)
	if err != nil {
		w.mu.Unlock()
		return err
	}
	if e.allocated(p.Load()) || w.streaming[gi] {
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
	err = e.file.Writev(at, [][]byte{b})
	w.mu.Lock()
	delete(w.streaming, gi)
	if err == nil {
		p.Store(uint32(at / format.SectorSize))
		w.fresh = append(w.fresh, gi)
		w.tables.fresh(gi)
	}
	w.mu.Unlock()
	return err
}

// maxDescFileWrite is the largest descriptor file whose CID QEMU
// rewrites (vmdk_write_cid: "VMDK description file too big").
const maxDescFileWrite = 16 << 20

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
	// as QEMU reads and writes it (vmdk_open_vmdk4's desc_offset); a
	// descriptor file is read and written whole, to its length rounded
	// up to a sector, as QEMU writes it.
	at, size := int64(format.SectorSize), int64(format.DescSize)
	if d.descFile() {
		n, err := fileLength(d.file)
		if err != nil {
			return err
		}
		if n > maxDescFileWrite {
			return fmt.Errorf("vmdk: VMDK description file too big: %w", syscall.EFBIG)
		}
		at, size = 0, n
	}
	old := make([]byte, size)
	if err := block.ReadAt(d.file, old, at); err != nil {
		return err
	}
	cid := newCID(d.cid.Load())
	desc, ok := format.RewriteCID(old, cid)
	if !ok {
		return fmt.Errorf("vmdk: the descriptor has no parentCID: %w", format.ErrCorrupt)
	}
	if err := d.writeDesc(at, old, desc); err != nil {
		return err
	}
	if err := d.file.Flush(); err != nil {
		return err
	}
	d.cid.Store(cid)
	w.cidDone.Store(true)
	return nil
}

// writeDesc writes the rewritten descriptor desc (old as read) at at:
// a descriptor file whole, as QEMU; an embedded one only in the sectors
// that changed.
func (d *Disk) writeDesc(at int64, old, desc []byte) error {
	if d.descFile() {
		return d.file.Writev(at, [][]byte{desc})
	}
	for s := 0; s < len(desc); s += format.SectorSize {
		if string(desc[s:s+format.SectorSize]) != string(old[s:s+format.SectorSize]) {
			if err := d.file.Writev(at+int64(s), [][]byte{desc[s : s+format.SectorSize]}); err != nil {
				return err
			}
		}
	}
	return nil
}

// descFile reports whether the image is a descriptor file naming its
// extents (KD8), not one hosted extent with its descriptor embedded.
func (d *Disk) descFile() bool {
	return len(d.extents) != 1 || d.extents[0].file != d.file
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

// Writev implements block.Device: each extent's part goes to it, a
// flat extent's into its file, a sparse extent's grain by grain,
// allocated first if need be (KD9).
func (d *Disk) Writev(off int64, bufs [][]byte) error {
	if d.w == nil {
		return d.ReadOnly.Writev(off, bufs)
	}
	total := block.VecLen(bufs)
	if err := d.checkWrite(off, total); err != nil || total == 0 {
		return err
	}
	pins, err := d.loadTables(off, total, false)
	defer unpin(pins)
	if err != nil {
		return err
	}
	if err := d.streamCheck(off, total, false); err != nil {
		return err
	}
	var c block.Cursor
	for done := int64(0); done < total; {
		pos := off + done
		e := d.find(pos)
		rel := pos - e.start
		n := min(total-done, e.size-rel)
		if e.flat {
			if err := d.changeCID(); err != nil {
				return err
			}
			if err := e.file.Writev(e.flatOff+rel, c.Next(bufs, n)); err != nil {
				return err
			}
			done += n
			continue
		}
		gb := e.layout.GrainBytes()
		gi, in := rel/gb, rel%gb
		n = min(n, gb-in)
		if e.layout.Compressed {
			if in != 0 || (n < gb && pos+n != d.size) {
				return ErrStreamPartial
			}
			if err := d.changeCID(); err != nil {
				return err
			}
			if err := d.writeCompressed(e, pos, c.Next(bufs, n)); err != nil {
				return err
			}
			done += n
			continue
		}
		// The grain first: a refusal there (a changed parent, KD13)
		// leaves the CID as it was; a new grain's space and its
		// entry in memory change nothing on disk that the CID guards.
		g, err := d.grain(e, gi)
		if err != nil {
			return err
		}
		if err := d.changeCID(); err != nil {
			return err
		}
		if err := e.file.Writev(int64(g)*format.SectorSize+in, c.Next(bufs, n)); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// loadTables loads and pins the grain tables a write (or zeroing, zeros)
// of n bytes at off may need, until the write ends (unpin), so that
// ErrTooManyTables refuses it before anything changes, the CID too
// (KD11), and never part way: it is ErrNotSupported, which callers
// (filter.Mirror) take to mean nothing was done. A table is loaded in
// place of the least recently used one with nothing to flush; when
// every loaded table has entries to flush, Flush writes them first.
// Zeros need a table only where they may make a zeroed grain, copy a
// grain up from the parent or write a compressed one.
func (d *Disk) loadTables(off, n int64, zeros bool) ([]*gtable, error) {
	var pins []*gtable
	for done := int64(0); done < n; {
		pos := off + done
		e := d.find(pos)
		rel := pos - e.start
		k := min(n-done, e.size-rel)
		done += k
		if e.flat || (zeros && !e.layout.ZeroGrain && !e.layout.Compressed && d.parent == nil) {
			continue
		}
		span := e.layout.GTEs * e.layout.GrainBytes()
		for i := rel / span; i*span < rel+k; i++ {
			tab, err := e.sw.tables.table(i, true)
			for try := 0; errors.Is(err, errFull) && try < 8; try++ {
				// Concurrent writes may fill the room a Flush made
				// before this one takes it: a few more tries.
				if err = d.Flush(); err == nil {
					tab, err = e.sw.tables.table(i, true)
				}
			}
			if errors.Is(err, errFull) {
				err = ErrTooManyTables
			}
			if err != nil {
				return pins, err
			}
			pins = append(pins, tab)
		}
	}
	return pins, nil
}

// testHookZeroGrain, set by a test only, runs as WriteZeroes is about
// to make grain gi a zeroed grain: a write racing it lands there.
var testHookZeroGrain func(gi int64)

// zeroChunk bounds the zeros WriteZeroes writes into a flat extent at
// once.
const zeroChunk = 1 << 20

// WriteZeroes implements block.Device. In an image with zeroed grains
// (zeroed_grain=on) a whole grain becomes a zeroed grain, as in QEMU.
// Otherwise unallocated and zeroed grains read as zeros already and stay
// as they are (QEMU writes zeros into new grains there); an allocated
// grain's range is zeroed in the file. A flat extent gets zeros written
// into its file, as QEMU's fallback writes them (its vmdk driver zeroes
// flat extents with ENOTSUP). Allocate is refused (ErrNotSupported):
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
	if !d.extents[0].layout.Compressed || d.extents[0].flat {
		// Zeros over terabytes need more tables than the bound holds
		// at once (KD8): a chunk at a time, as QEMU zeroes a grain at
		// a time; a refusal leaves the chunks before it zeroed. A
		// streamOptimized image's zeros stay whole: they are checked
		// whole before any is written (KD12).
		for n > zeroSplit-off%zeroSplit {
			k := zeroSplit - off%zeroSplit
			if err := d.writeZeroes(off, k, flags); err != nil {
				return err
			}
			off, n = off+k, n-k
		}
	}
	return d.writeZeroes(off, n, flags)
}

// zeroSplit is the span WriteZeroes zeroes at a time, on its multiples:
// its tables hold at most 2^22 entries (8192 tables of 512 one-sector
// grains), well under maxLoadedGTEs. (A variable for tests.)
var zeroSplit int64 = 1 << 31

// writeZeroes is WriteZeroes of a range checked.
func (d *Disk) writeZeroes(off, n int64, flags block.Flags) error {
	pins, err := d.loadTables(off, n, true)
	defer unpin(pins)
	if err != nil {
		return err
	}
	if err := d.streamCheck(off, n, true); err != nil {
		return err
	}
	for done := int64(0); done < n; {
		pos := off + done
		e := d.find(pos)
		rel := pos - e.start
		k := min(n-done, e.size-rel)
		if e.flat {
			if err := d.zeroFlat(e, e.flatOff+rel, k); err != nil {
				return err
			}
			done += k
			continue
		}
		gb := e.layout.GrainBytes()
		gi, in := rel/gb, rel%gb
		k = min(k, gb-in)
		done += k
		g, err := e.sw.tables.get(gi)
		if err != nil {
			return err
		}
		if e.layout.Compressed && e.allocated(g) {
			return ErrStreamAllocated // a compressed grain is never rewritten
		}
		if e.layout.Compressed && (!e.layout.ZeroGrain || k != gb) {
			// QEMU's fallback writes zeros there (a zeroed grain is
			// for whole grains only): a deflated grain of them
			// (streamCheck found whole grains, the last one maybe
			// short).
			if err := d.changeCID(); err != nil {
				return err
			}
			if err := d.writeCompressed(e, pos, [][]byte{make([]byte, k)}); err != nil {
				return err
			}
			continue
		}
		if e.layout.ZeroGrain && in == 0 && k == gb && g != format.GTEZeroed {
			// A whole grain of an image with zeroed grains: its entry
			// says so, as QEMU's does (KD9).
			if err := d.changeCID(); err != nil {
				return err
			}
			if testHookZeroGrain != nil {
				testHookZeroGrain(gi)
			}
			if err := d.zeroGrain(e, gi); err != nil {
				return err
			}
			continue
		}
		if g == 0 && d.parent != nil {
			// It reads through to the parent: zeros are written into
			// a new grain there, as QEMU's fallback writes them (the
			// grain first, as in Writev).
			g, err := d.grain(e, gi)
			if err != nil {
				return err
			}
			if err := d.changeCID(); err != nil {
				return err
			}
			if err := e.file.WriteZeroes(int64(g)*format.SectorSize+in, k, 0); err != nil {
				return err
			}
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
		if err := e.file.WriteZeroes(int64(g)*format.SectorSize+in, k, flags&block.MayUnmap); err != nil {
			return err
		}
	}
	return nil
}

// zeroFlat writes n bytes of zeros at host into flat extent e's file.
func (d *Disk) zeroFlat(e *extent, host, n int64) error {
	if err := d.changeCID(); err != nil {
		return err
	}
	zeros := make([]byte, min(n, zeroChunk))
	for done := int64(0); done < n; {
		k := min(n-done, zeroChunk)
		if err := e.file.Writev(host+done, [][]byte{zeros[:k]}); err != nil {
			return err
		}
		done += k
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

// Flush implements block.Device (B6, KD10): in each sparse extent, the
// grains allocated since the last Flush get their entries on disk only
// once the file reaches past them and their bytes are durable; a second
// flush makes the entries durable. A flat extent's file is flushed.
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
	var errs []error
	for i := range d.extents {
		e := &d.extents[i]
		if e.flat {
			errs = append(errs, e.file.Flush())
		} else {
			errs = append(errs, d.flushSparse(e))
		}
	}
	return errors.Join(errs...)
}

// flushSparse is Flush of sparse extent e (KD10), under flushMu.
func (d *Disk) flushSparse(e *extent) error {
	w := e.sw
	w.mu.Lock()
	fresh := w.fresh
	w.fresh = nil
	// The entries as they are now, under mu with the file grown past
	// them below: one changed later (a grain zeroed, then written anew)
	// is in w.fresh again and waits for the next Flush.
	entries := make([]uint32, len(fresh))
	for i, gi := range fresh {
		entries[i], _ = w.tables.peek(gi) // a fresh grain's table is loaded
	}
	var err error
	if len(fresh) > 0 && w.sized < w.free {
		// Under mu: no write reaches past free, so growing the file to
		// it never cuts one short (a partly written last grain).
		if err = e.file.Truncate(w.free); err == nil {
			w.sized = w.free
		}
	}
	w.mu.Unlock()
	if err == nil {
		err = e.file.Flush()
	}
	if err == nil && len(fresh) > 0 {
		err = writeEntries(e, fresh, entries)
		if err == nil {
			err = e.file.Flush()
		}
		if err == nil {
			// Their tables may go now (grainTables).
			w.tables.flushed(fresh)
		}
	}
	if err != nil {
		w.mu.Lock()
		w.fresh = append(fresh, w.fresh...)
		w.mu.Unlock()
	}
	return err
}

// writeEntries writes entries[i], grain grains[i]'s, into e's table,
// and into the redundant table (KD10), in runs of nearby entries of one
// table.
func writeEntries(e *extent, grains []int64, entries []uint32) error {
	t := e.sw.tables
	gtes := t.gtes
	for i, gi := range grains {
		// A fresh grain's table is loaded (its entry was set there);
		// only Flush, under flushMu, changes its disk copy.
		binary.LittleEndian.PutUint32(t.tabs[gi/gtes].Load().disk[4*(gi%gtes):], entries[i])
	}
	grains = slices.Clone(grains)
	slices.Sort(grains)
	const near = format.SectorSize / 4 // entries in a sector
	for i := 0; i < len(grains); {
		ti := grains[i] / gtes
		j := i + 1
		for j < len(grains) && grains[j]/gtes == ti && grains[j]-grains[j-1] <= near {
			j++
		}
		a, b := 4*(grains[i]-ti*gtes), 4*(grains[j-1]-ti*gtes)+4
		disk := t.tabs[ti].Load().disk
		for _, tables := range [][]uint32{t.gts, t.rgts} {
			if tables == nil {
				continue
			}
			if err := e.file.Writev(int64(tables[ti])*format.SectorSize+a, [][]byte{disk[a:b]}); err != nil {
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

// holes reports whether the n bytes at off of f are known to read as
// zeros (block.ZeroRun: a hole of the file) without reading them.
func holes(f block.Device, off, n int64) bool {
	dm, ok := f.(block.DataMapper)
	if !ok {
		return false
	}
	data, zero, run, err := block.ZeroRun(dm, off, n)
	return err == nil && !data && zero && run >= n
}
