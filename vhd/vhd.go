package vhd

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/qring/qring/block"
	"github.com/qring/qring/vhd/format"
)

// Options configure Open.
type Options struct {
	// Name is the image's name in the errors QEMU words with it (its
	// EFBIG: "Could not open 'NAME': File too large").
	Name string
	// SizeCalc is QEMU's force_size_calc (format.SizeCalc).
	SizeCalc format.SizeCalc
	// Writable opens the image for writing (VD6); the file must be
	// writable. Without it the Disk is read-only (VD1).
	Writable bool
}

// Disk is an open VHD image: a block.Device, read-only (VD1) unless
// opened Writable (VD6).
type Disk struct {
	file   block.Device
	footer format.Footer
	size   int64 // virtual size in bytes
	fixed  bool  // reads pass through to the file
	// dynamic is set when the image has a dynamic header (the footer
	// copy at offset 0): its Layout and BAT are then loaded.
	dynamic bool
	layout  format.Layout
	// bat holds the entries covering the virtual size (VD3); a writable
	// Disk stores a new block's entry once its bitmap is written (VD7).
	bat            []atomic.Uint32
	w              *writer // nil unless Writable (write.go)
	block.ReadOnly         // writes refused (VD1) unless w is set
}

var (
	_ block.Device     = (*Disk)(nil)
	_ block.DataMapper = (*Disk)(nil)
	_ block.Discarder  = (*Disk)(nil)
)

// batChunk is how much of the BAT Open reads at a time.
const batChunk = 64 << 10

// Open reads the VHD image in file, as QEMU's vpc_open does, in its
// order and words (format's VF2). The Disk owns file from then on; on
// error file is left to the caller.
func Open(file block.Device, o Options) (*Disk, error) {
	n, err := file.Size()
	if err != nil {
		return nil, err
	}
	// QEMU counts a file's length in whole sectors (bdrv_getlength).
	fileLen := (n + format.SectorSize - 1) &^ (format.SectorSize - 1)
	buf := make([]byte, format.FooterSize)
	if err := block.ReadAt(file, buf, 0); err != nil {
		return nil, fmt.Errorf("Unable to read VHD header: %w", err)
	}
	dynamic := format.HasFooterCookie(buf)
	if !dynamic {
		// A fixed disk has its footer at the end of the file only.
		if fileLen < format.FooterSize {
			return nil, &format.Error{Msg: "File too small for a VHD header", Err: format.ErrCorrupt}
		}
		if err := block.ReadAt(file, buf, fileLen-format.FooterSize); err != nil {
			return nil, err
		}
	}
	f, err := format.ParseFooter(buf)
	if err != nil {
		return nil, err
	}
	if !dynamic && f.Type != format.TypeFixed {
		// Only a fixed disk has no footer copy at the start: as QEMU's
		// vpc_open, anything else is no VPC image (a dynamic disk
		// whose first sector is damaged read as zeros, VD2).
		return nil, &format.Error{Msg: "invalid VPC image", Err: format.ErrCorrupt}
	}
	sectors, err := f.Sectors(o.SizeCalc)
	if err != nil {
		if errors.Is(err, format.ErrTooLarge) {
			err = &format.Error{Msg: fmt.Sprintf("Could not open '%s': %v", o.Name, err), Err: format.ErrTooLarge}
		}
		return nil, err
	}
	if f.Type == format.TypeDifferencing {
		return nil, &format.Error{Msg: "differencing VHD images are not supported by qring (fixed and dynamic are)", Err: format.ErrUnsupported}
	}
	d := &Disk{file: file, footer: f, size: sectors * format.SectorSize, fixed: f.Type == format.TypeFixed, dynamic: dynamic,
		ReadOnly: block.ReadOnly{Why: "vpc (opened read-only)"}}
	var free int64
	if dynamic {
		if free, err = d.loadDynamic(fileLen); err != nil {
			return nil, err
		}
	}
	if o.Writable {
		if err := d.openWriter(n, free); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// loadDynamic reads the dynamic header and the BAT, and checks that
// every allocated block lies within the file (VD3). It returns where
// the last block ends (QEMU's free_data_block_offset).
func (d *Disk) loadDynamic(fileLen int64) (int64, error) {
	buf := make([]byte, format.DynHeaderSize)
	// A read QEMU's block layer cannot make fails as it fails there; one
	// past the end of the file reads zeros (B2): no magic.
	off := d.footer.DataOffset
	if format.ReadFails(off, format.DynHeaderSize) || block.ReadAt(d.file, buf, int64(off)) != nil {
		return 0, &format.Error{Msg: "Error reading dynamic VHD header", Err: format.ErrCorrupt}
	}
	h, err := format.ParseDynHeader(buf)
	if err != nil {
		return 0, err
	}
	l, err := format.CheckDynamic(h, d.size/format.SectorSize, fileLen)
	if err != nil {
		return 0, err
	}
	d.layout = l
	// The whole table is read, a chunk at a time, for QEMU's
	// free_data_block_offset; only the entries that map guest bytes
	// are kept (VD3: Need <= Entries, and the table lies in the file).
	d.bat = make([]atomic.Uint32, l.Need)
	free := l.TableEnd
	chunk := make([]byte, min(batChunk, l.Entries*4))
	for i := int64(0); i < l.Entries; {
		k := min(int64(len(chunk))/4, l.Entries-i)
		b := chunk[:4*k]
		if err := block.ReadAt(d.file, b, l.TableOffset+4*i); err != nil {
			return 0, &format.Error{Msg: "Error reading pagetable", Err: format.ErrCorrupt}
		}
		for j := range int(k) {
			e := format.BATEntry(b, j)
			if i+int64(j) < l.Need {
				d.bat[i+int64(j)].Store(e)
			}
			if e != format.Unallocated {
				free = max(free, l.BlockEnd(e))
			}
		}
		i += k
	}
	if free > fileLen {
		return 0, format.ErrTruncated()
	}
	return free, nil
}

// Footer is the image's footer.
func (d *Disk) Footer() format.Footer { return d.footer }

// Dynamic reports whether the image has a dynamic header (QEMU then
// reports its block size as the cluster size).
func (d *Disk) Dynamic() bool { return d.dynamic }

// BlockSize is the dynamic disk's block size, 0 for a fixed disk
// (qemu-img info's cluster_size: vpc_get_info).
func (d *Disk) BlockSize() int64 {
	if d.footer.Type == format.TypeFixed {
		return 0
	}
	return d.layout.BlockSize
}

// File is the image file under the disk.
func (d *Disk) File() block.Device { return d.file }

// hostOff returns where guest offset off lies in the file, and how many
// bytes from off (at most n) map the same way; -1 for zeros (an
// unallocated block, or past the size) (VD4).
func (d *Disk) hostOff(off, n int64) (int64, int64) {
	if off >= d.size {
		return -1, n
	}
	n = min(n, d.size-off)
	if d.fixed {
		return off, n
	}
	if d.layout.BlockSize == 0 {
		// No dynamic header (a footer at the end only) but not a fixed
		// disk: QEMU's table is empty, everything reads as zeros.
		return -1, n
	}
	bi, in := off/d.layout.BlockSize, off%d.layout.BlockSize
	n = min(n, d.layout.BlockSize-in)
	if bi >= int64(len(d.bat)) {
		return -1, n
	}
	e := d.bat[bi].Load()
	if e == format.Unallocated {
		return -1, n
	}
	return d.layout.DataOffset(e, in), n
}

// Readv implements block.Device (VD4). Reads take no lock: a block's
// entry, once set, never changes (VD2, VD7).
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
		host, n := d.hostOff(off+done, total-done)
		sub := c.Next(bufs, n)
		if host < 0 {
			for _, b := range sub {
				clear(b)
			}
		} else if err := d.file.Readv(host, sub); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// Size implements block.Device: the virtual size (format's VF4).
func (d *Disk) Size() (int64, error) {
	if d.Closed() {
		return 0, block.ErrClosed
	}
	return d.size, nil
}

// Caps implements block.Device: no zeroing flags (VD1); a writable
// fixed disk's are the file's, a dynamic one's MayUnmap only (VD6).
func (d *Disk) Caps() block.Caps {
	c := d.file.Caps()
	out := block.Caps{Align: 1, MemAlign: 1, Media: c.Media, Fixed: true}
	switch {
	case d.w != nil && d.fixed:
		out.ZeroFlags = c.ZeroFlags &^ (block.Serialising | block.NoWait)
	case d.w != nil:
		out.ZeroFlags = block.MayUnmap
	}
	return out
}

// Close implements block.Device: it closes the file.
func (d *Disk) Close() error {
	if d.Closed() {
		return block.ErrClosed
	}
	err := d.closeWriter()
	if d.MarkClosed() {
		return block.ErrClosed
	}
	return errors.Join(err, d.file.Close())
}
