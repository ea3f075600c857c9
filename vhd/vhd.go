package vhd

import (
	"errors"
	"fmt"

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
}

// Disk is an open VHD image: a read-only block.Device (VD1).
type Disk struct {
	file   block.Device
	footer format.Footer
	size   int64 // virtual size in bytes
	fixed  bool  // reads pass through to the file
	// dynamic is set when the image has a dynamic header (the footer
	// copy at offset 0): its Layout and BAT are then loaded.
	dynamic        bool
	layout         format.Layout
	bat            []uint32 // the entries covering the virtual size (VD3)
	block.ReadOnly          // writes refused (VD1)
}

var (
	_ block.Device     = (*Disk)(nil)
	_ block.DataMapper = (*Disk)(nil)
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
		ReadOnly: block.ReadOnly{Why: "vpc (qring reads VHD images only)"}}
	if dynamic {
		if err := d.loadDynamic(fileLen); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// loadDynamic reads the dynamic header and the BAT, and checks that
// every allocated block lies within the file (VD3).
func (d *Disk) loadDynamic(fileLen int64) error {
	buf := make([]byte, format.DynHeaderSize)
	// A read QEMU's block layer cannot make fails as it fails there; one
	// past the end of the file reads zeros (B2): no magic.
	off := d.footer.DataOffset
	if format.ReadFails(off, format.DynHeaderSize) || block.ReadAt(d.file, buf, int64(off)) != nil {
		return &format.Error{Msg: "Error reading dynamic VHD header", Err: format.ErrCorrupt}
	}
	h, err := format.ParseDynHeader(buf)
	if err != nil {
		return err
	}
	l, err := format.CheckDynamic(h, d.size/format.SectorSize, fileLen)
	if err != nil {
		return err
	}
	d.layout = l
	// The whole table is read, a chunk at a time, for QEMU's
	// free_data_block_offset; only the entries that map guest bytes
	// are kept (VD3: Need <= Entries, and the table lies in the file).
	d.bat = make([]uint32, l.Need)
	free := l.TableEnd
	chunk := make([]byte, min(batChunk, l.Entries*4))
	for i := int64(0); i < l.Entries; {
		k := min(int64(len(chunk))/4, l.Entries-i)
		b := chunk[:4*k]
		if err := block.ReadAt(d.file, b, l.TableOffset+4*i); err != nil {
			return &format.Error{Msg: "Error reading pagetable", Err: format.ErrCorrupt}
		}
		for j := range int(k) {
			e := format.BATEntry(b, j)
			if i+int64(j) < l.Need {
				d.bat[i+int64(j)] = e
			}
			if e != format.Unallocated {
				free = max(free, l.BlockEnd(e))
			}
		}
		i += k
	}
	if free > fileLen {
		return format.ErrTruncated()
	}
	return nil
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
	if bi >= int64(len(d.bat)) || d.bat[bi] == format.Unallocated {
		return -1, n
	}
	return d.layout.DataOffset(d.bat[bi], in), n
}

// Readv implements block.Device (VD4). The Disk's state is fixed since
// Open, so reads take no lock (VD2).
func (d *Disk) Readv(off int64, bufs [][]byte) error {
	if d.Closed() {
		return block.ErrClosed
	}
	total := block.VecLen(bufs)
	if err := block.CheckRange(off, total); err != nil {
		return err
	}
	var sub [][]byte
	bi, bo := 0, 0 // position in bufs
	for done := int64(0); done < total; {
		host, n := d.hostOff(off+done, total-done)
		sub = sub[:0]
		for rem := n; rem > 0; {
			b := bufs[bi][bo:]
			if int64(len(b)) > rem {
				b = b[:rem]
			}
			sub = append(sub, b)
			rem -= int64(len(b))
			bo += len(b)
			if bo == len(bufs[bi]) {
				bi, bo = bi+1, 0
			}
		}
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

// Caps implements block.Device: no zeroing flags (VD1).
func (d *Disk) Caps() block.Caps {
	c := d.file.Caps()
	return block.Caps{Align: 1, MemAlign: 1, Media: c.Media, Fixed: true}
}

// Close implements block.Device: it closes the file.
func (d *Disk) Close() error {
	if d.MarkClosed() {
		return block.ErrClosed
	}
	return d.file.Close()
}
