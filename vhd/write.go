package vhd

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vhd/format"
)

// ErrOutOfRange is a write past the virtual size (QEMU refuses it too).
var ErrOutOfRange = fmt.Errorf("vhd: write past the end of the disk: %w", block.ErrRange)

// ErrNoResize is Truncate's refusal, in QEMU's words: block.ErrNoResize.
var ErrNoResize = block.ErrNoResize

// writer is what a writable Disk keeps besides the read-only state
// (VD6-VD9). A fixed disk needs none of it but the flag.
type writer struct {
	mu sync.Mutex
	// pending are the blocks whose bitmap is being written: a writer
	// into one waits for it (VD7).
	pending map[int64]*pendingBlock
	// done has a bit per block whose bitmap this Disk wrote (all ones,
	// VD7): writes into it go straight to the file.
	done []atomic.Uint64

	// allocMu: one allocation at a time (VD8); it guards free and
	// table.
	allocMu sync.Mutex
	// free is where the next block goes: past every block and every
	// byte the file held at Open, so a new block reads as zeros where
	// nothing was written into it (VD7).
	free int64
	// table is the BAT as it is on disk (VD8).
	table  []byte
	ones   []byte // a bitmap with every sector present
	footer []byte // the footer, encoded
}

type pendingBlock struct {
	ready chan struct{}
	entry uint32
	err   error
}

// openWriter makes d writable (VD6). rawLen is the file's length, free
// where its last block ends.
func (d *Disk) openWriter(rawLen, free int64) error {
	w := &writer{}
	d.w = w
	d.ReadOnly.Why = ""
	if d.fixed {
		// The footer must lie past the disk's bytes, or a write would
		// overwrite it (a truncated file, a footer that lies about the
		// size).
		if end := (rawLen+format.SectorSize-1)&^(format.SectorSize-1) - format.FooterSize; end < d.size {
			return &format.Error{Msg: fmt.Sprintf("vhd: the footer at %d lies inside the disk's %d bytes: the image can only be opened read-only", end, d.size), Err: format.ErrCorrupt}
		}
		return nil
	}
	if !d.dynamic || d.layout.BitmapSize == 0 {
		// No table to allocate in, or blocks under 4 KiB, whose bitmap
		// QEMU sizes 0 (format.BitmapSize): a new block would start on
		// the old footer and read it back.
		return &format.Error{Msg: "qring writes only fixed VHD disks and dynamic ones with blocks of 4 KiB or more", Err: format.ErrUnsupported}
	}
	l := d.layout
	w.table = make([]byte, l.Entries*4)
	if err := block.ReadAt(d.file, w.table, l.TableOffset); err != nil {
		return err
	}
	if err := d.checkOverlaps(); err != nil {
		return err
	}
	// VD7: past the blocks, and past whatever else the file holds (a
	// block a crash left out of the table), but for the end footer.
	end := (rawLen + format.SectorSize - 1) &^ (format.SectorSize - 1)
	w.free = max(free, end)
	if rawLen%format.SectorSize == 0 && rawLen-format.FooterSize >= free {
		b := make([]byte, format.FooterSize)
		if err := block.ReadAt(d.file, b, rawLen-format.FooterSize); err != nil {
			return err
		}
		if format.HasFooterCookie(b) {
			w.free = rawLen - format.FooterSize
		}
	}
	w.pending = map[int64]*pendingBlock{}
	w.done = make([]atomic.Uint64, (len(d.bat)+63)/64)
	w.ones = make([]byte, l.BitmapSize)
	for i := range w.ones {
		w.ones[i] = 0xff
	}
	w.footer = d.footer.Encode()
	return nil
}

// checkOverlaps refuses to write into an image whose blocks overlap
// each other or its metadata (the footer copy, the dynamic header, the
// BAT): a write into one would change another's bytes or the table.
// QEMU writes into such an image all the same; reading it is safe.
func (d *Disk) checkOverlaps() error {
	l := d.layout
	type span struct{ a, b int64 }
	spans := []span{{0, format.FooterSize}, {int64(d.footer.DataOffset), int64(d.footer.DataOffset) + format.DynHeaderSize}, {l.TableOffset, l.TableEnd}}
	for i := range d.bat {
		if e := d.bat[i].Load(); e != format.Unallocated {
			spans = append(spans, span{int64(e) * format.SectorSize, l.BlockEnd(e)})
		}
	}
	slices.SortFunc(spans, func(x, y span) int { return cmp.Compare(x.a, y.a) })
	for i := 1; i < len(spans); i++ {
		if spans[i].a < spans[i-1].b {
			return &format.Error{Msg: fmt.Sprintf("vhd: blocks or metadata overlap at offset %d: the image can only be opened read-only", spans[i].a), Err: format.ErrCorrupt}
		}
	}
	return nil
}

func (w *writer) isDone(bi int64) bool { return w.done[bi/64].Load()&(1<<(bi%64)) != 0 }
func (w *writer) setDone(bi int64)     { w.done[bi/64].Or(1 << (bi % 64)) }

// prepare readies block bi for writing and returns its BAT entry: a new
// block is given space at free and mapped on disk (allocate); either
// way its bitmap is written, all sectors present, once this session (as
// QEMU does, so that a reader that honours bitmaps sees what is
// written). A new block's entry is visible to reads only once it is
// durable (VD7, VD8).
func (d *Disk) prepare(bi int64) (uint32, error) {
	w := d.w
	if w.isDone(bi) {
		return d.bat[bi].Load(), nil
	}
	w.mu.Lock()
	if w.isDone(bi) {
		w.mu.Unlock()
		return d.bat[bi].Load(), nil
	}
	if p := w.pending[bi]; p != nil {
		w.mu.Unlock()
		<-p.ready
		return p.entry, p.err
	}
	e := d.bat[bi].Load()
	alloc := e == format.Unallocated
	p := &pendingBlock{ready: make(chan struct{})}
	w.pending[bi] = p
	w.mu.Unlock()
	if alloc {
		e, p.err = d.allocate(bi)
	} else {
		p.err = d.file.Writev(int64(e)*format.SectorSize, [][]byte{w.ones})
	}
	p.entry = e
	w.mu.Lock()
	delete(w.pending, bi)
	if p.err == nil {
		if alloc {
			d.bat[bi].Store(e)
		}
		w.setDone(bi)
	}
	w.mu.Unlock()
	close(p.ready)
	return e, p.err
}

// allocate gives block bi the space at free and maps it on disk before
// any guest byte is written into it (VD8): its bitmap and the end
// footer past it, a flush, its BAT entry, a flush. A crash leaves
// either the block mapped over zeros, or its space leaked holding
// nothing but a bitmap and zeros: QEMU, which places its next block
// after the last one the table maps whatever the file holds past it,
// may put a block there and show its unwritten sectors, so they must
// not be another block's data. (QEMU's own order: bitmap, footer, entry,
// each written and flushed, then the data.) A failure leaks the space
// (free moved on), and a later write allocates the block again.
func (d *Disk) allocate(bi int64) (uint32, error) {
	w := d.w
	w.allocMu.Lock()
	defer w.allocMu.Unlock()
	if w.free/format.SectorSize >= format.Unallocated {
		return 0, fmt.Errorf("vhd: no block can start past 2 TiB in the file: %w", block.ErrNotSupported)
	}
	e := uint32(w.free / format.SectorSize)
	w.free += d.layout.BitmapSize + d.layout.BlockSize
	if err := d.file.Writev(int64(e)*format.SectorSize, [][]byte{w.ones}); err != nil {
		return 0, err
	}
	// The file reaches the block, and ends with a footer, before the
	// table maps it.
	if err := d.file.Writev(w.free, [][]byte{w.footer}); err != nil {
		return 0, err
	}
	if err := d.file.Flush(); err != nil {
		return 0, err
	}
	a := bi * 4 &^ (format.SectorSize - 1) // the entry's sector of the table
	b := min(a+format.SectorSize, int64(len(w.table)))
	format.PutBATEntry(w.table, int(bi), e)
	err := d.file.Writev(d.layout.TableOffset+a, [][]byte{w.table[a:b]})
	if err == nil {
		err = d.file.Flush()
	}
	if err != nil {
		// The media may hold the entry or not: either maps nothing
		// but zeros. A later write of this sector writes it back.
		format.PutBATEntry(w.table, int(bi), format.Unallocated)
		return 0, err
	}
	return e, nil
}

// checkWrite checks a write of n bytes at off (VD6).
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

// Writev implements block.Device: a fixed disk's bytes go to the file
// at the same offsets; a dynamic disk's to the block, allocated first
// if need be (VD7).
func (d *Disk) Writev(off int64, bufs [][]byte) error {
	if d.w == nil {
		return d.ReadOnly.Writev(off, bufs)
	}
	total := block.VecLen(bufs)
	if err := d.checkWrite(off, total); err != nil || total == 0 {
		return err
	}
	if d.fixed {
		return d.file.Writev(off, bufs)
	}
	var c block.Cursor
	bs := d.layout.BlockSize
	for done := int64(0); done < total; {
		pos := off + done
		bi, in := pos/bs, pos%bs
		n := min(total-done, bs-in)
		e, err := d.prepare(bi)
		if err != nil {
			return err
		}
		if err := d.file.Writev(d.layout.DataOffset(e, in), c.Next(bufs, n)); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// WriteZeroes implements block.Device. A dynamic disk's unallocated
// blocks read as zeros already and stay unallocated (QEMU writes zeros
// into them, allocating them); an allocated block's range is zeroed in
// the file, as are a fixed disk's bytes. Allocate is refused
// (ErrNotSupported) on a dynamic disk: its blocks cannot be reserved
// without writing them.
func (d *Disk) WriteZeroes(off, n int64, flags block.Flags) error {
	if d.w == nil {
		return d.ReadOnly.WriteZeroes(off, n, flags)
	}
	if err := d.checkWrite(off, n); err != nil || n == 0 {
		return err
	}
	if d.fixed {
		return d.file.WriteZeroes(off, n, flags)
	}
	if flags&block.Allocate != 0 {
		return fmt.Errorf("vhd: zeroing a dynamic disk's blocks efficiently: %w", block.ErrNotSupported)
	}
	bs := d.layout.BlockSize
	for done := int64(0); done < n; {
		pos := off + done
		bi, in := pos/bs, pos%bs
		k := min(n-done, bs-in)
		done += k
		if d.bat[bi].Load() == format.Unallocated {
			// Another write allocating it meanwhile leaves this range
			// reading as zeros too: the new block's space is fresh.
			continue
		}
		e, err := d.prepare(bi)
		if err != nil {
			return err
		}
		if err := d.file.WriteZeroes(d.layout.DataOffset(e, in), k, flags&block.MayUnmap); err != nil {
			return err
		}
	}
	return nil
}

// Discard implements block.Discarder as QEMU's vpc driver, which has no
// discard: the bytes stay (a discard is a hint).
func (d *Disk) Discard(off, n int64) error {
	if d.w == nil {
		return d.ReadOnly.WriteZeroes(off, n, 0)
	}
	return d.checkWrite(off, n)
}

// Truncate implements block.Device: QEMU's vpc driver cannot resize.
func (d *Disk) Truncate(size int64) error {
	if d.w == nil {
		return d.ReadOnly.Truncate(size)
	}
	if d.Closed() {
		return block.ErrClosed
	}
	return ErrNoResize
}

// Flush implements block.Device (B6): every block is mapped on disk
// when it is allocated (VD8), so a flush of the file makes every
// completed write durable. Nothing is written: an image opened writable
// and closed without a write is left as it was.
func (d *Disk) Flush() error {
	if d.w == nil {
		return d.ReadOnly.Flush()
	}
	if d.Closed() {
		return block.ErrClosed
	}
	return d.file.Flush()
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
