package filter

import (
	"math"
	"sync/atomic"

	"github.com/qring/qring/block"
)

// RawOptions configure a Raw window.
type RawOptions struct {
	// Offset is where the window starts on the child.
	Offset int64
	// Size fixes the window's size. 0: the window runs to the child's end
	// and grows with it (writes past the end grow the child), unless
	// Fixed is set.
	Size int64
	// Fixed fixes the window at Size even when it is 0 (QEMU's raw
	// driver with size=0: an empty disk, not the whole child).
	Fixed bool
	// Sectors rounds the child's size up to a multiple of 512 before the
	// offset is taken off, and the window's after, as QEMU's block layer
	// counts a file's length and the raw node's in sectors: the bytes
	// past the child's end read as zeros (B2), and
	// a write there grows the child. Size then runs ahead of what was
	// written, which the Device contract does not allow; the qemu-img
	// compatible tools want it, for a raw file of an odd length.
	Sectors bool
}

// Raw is QEMU's raw format driver: the child's bytes, optionally through
// an offset/size window. Requests map 1:1 (a passthrough layer, FL1).
//
// With a fixed Size, the window never grows: reads past it fill zeros
// (B2), writes, zeroing and discards past it fail with block.ErrRange,
// and Truncate is block.ErrNotSupported.
//
// Discard is QEMU's raw_co_pdiscard (FL8): checked against the window as
// a write is, then passed to the child at Offset+off; block.ErrNotSupported,
// having done nothing, when the child is no block.Discarder.
//
// After Close every method returns block.ErrClosed, including those a
// fixed window answers without its child (B7).
type Raw struct {
	child  block.Device
	o      RawOptions
	closed atomic.Bool
}

var (
	_ block.Device     = (*Raw)(nil)
	_ block.Discarder  = (*Raw)(nil)
	_ block.DataMapper = (*Raw)(nil)
)

// NewRaw wraps child. It owns child (FL4).
func NewRaw(child block.Device, o RawOptions) (*Raw, error) {
	if o.Offset < 0 || o.Size < 0 || o.Offset+o.Size < o.Offset {
		return nil, block.ErrRange
	}
	return &Raw{child: child, o: o}, nil
}

// fixed says whether the window has a fixed size.
func (r *Raw) fixed() bool { return r.o.Fixed || r.o.Size > 0 }

// Fixed says whether the window has a fixed size (RawOptions.Size or
// Fixed): Truncate refuses it.
func (r *Raw) Fixed() bool { return r.fixed() }

// Unwrap returns the child.
func (r *Raw) Unwrap() block.Device { return r.child }

// Offset is where the window starts on the child: whoever reports the
// child's allocation through the window (QEMU's raw driver passes block
// status through, BDRV_BLOCK_RAW) shifts it by this much.
func (r *Raw) Offset() int64 { return r.o.Offset }

func (r *Raw) Size() (int64, error) {
	if r.closed.Load() {
		return 0, block.ErrClosed
	}
	if r.fixed() {
		return r.o.Size, nil
	}
	n, err := r.child.Size()
	if err != nil {
		return 0, err
	}
	if r.o.Sectors {
		// QEMU measures in sectors twice: the file (bdrv_getlength of
		// the child), then the window the raw driver makes of it.
		n = (n + 511) &^ 511
		return (max(n-r.o.Offset, 0) + 511) &^ 511, nil
	}
	return max(n-r.o.Offset, 0), nil
}

// DataRun implements block.DataMapper: the child's answer shifted by the
// offset, cut at a fixed window's end (past it, a hole); data throughout
// when the child cannot tell.
func (r *Raw) DataRun(off, n int64) (bool, int64, error) {
	data, zero, run, err := r.ZeroRun(off, n)
	return data || !zero, run, err // a hole only where it reads as zeros
}

// ZeroRun implements block.ZeroMapper as DataRun, with the child's zero
// answer (block.ZeroRun).
func (r *Raw) ZeroRun(off, n int64) (data, zero bool, length int64, err error) {
	if err := r.inWindow(off, 0); err != nil || n < 0 {
		return false, false, 0, block.ErrRange
	}
	if r.fixed() {
		if off >= r.o.Size {
			return false, true, n, nil
		}
		n = min(n, r.o.Size-off)
	}
	dm, ok := r.child.(block.DataMapper)
	if !ok {
		return true, false, n, nil
	}
	return block.ZeroRun(dm, r.o.Offset+off, n)
}

// AllocatedSize implements block.DataMapper: the child's, or 0 when it
// cannot tell.
func (r *Raw) AllocatedSize() (int64, error) {
	if r.closed.Load() {
		return 0, block.ErrClosed
	}
	if dm, ok := r.child.(block.DataMapper); ok {
		return dm.AllocatedSize()
	}
	return 0, nil
}

// inWindow checks a write (or discard) of [off, off+n) against a fixed
// window, and that it does not overflow once shifted by the offset.
func (r *Raw) inWindow(off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if off+n > math.MaxInt64-r.o.Offset {
		return block.ErrRange
	}
	if r.closed.Load() {
		return block.ErrClosed
	}
	if r.fixed() && off+n > r.o.Size {
		return block.ErrRange
	}
	return nil
}

func (r *Raw) Readv(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if r.closed.Load() {
		return block.ErrClosed
	}
	if !r.fixed() || off+n <= r.o.Size {
		return r.child.Readv(r.o.Offset+off, bufs)
	}
	// The part past a fixed window reads as zeros, whatever the child
	// holds there (it may be the next partition).
	in := max(r.o.Size-off, 0)
	for _, b := range subVec(bufs, in, n-in) {
		clear(b)
	}
	if in == 0 {
		return nil
	}
	return r.child.Readv(r.o.Offset+off, subVec(bufs, 0, in))
}

func (r *Raw) Writev(off int64, bufs [][]byte) error {
	if err := r.inWindow(off, block.VecLen(bufs)); err != nil {
		return err
	}
	return r.child.Writev(r.o.Offset+off, bufs)
}

func (r *Raw) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := CheckFlags(r.Caps(), off, n, flags); err != nil {
		return err
	}
	if err := r.inWindow(off, n); err != nil {
		return err
	}
	if flags&block.MayUnmap != 0 && flags&block.Allocate == 0 && r.o.Sectors && !r.fixed() {
		// The sector tail past the child's end reads as zeros already:
		// zeroing it may unmap, so it is left as it is and the child
		// keeps its length, as QEMU's PUNCH_HOLE|KEEP_SIZE (zeroing the
		// last sector of a 1000-byte file grew it to 1024 bytes).
		cn, err := r.child.Size()
		if err != nil {
			return err
		}
		size, err := r.Size()
		if err != nil {
			return err
		}
		if r.o.Offset+off+n > cn && off+n <= size {
			n = max(cn-r.o.Offset-off, 0)
			if n == 0 {
				return nil
			}
		}
	}
	return r.child.WriteZeroes(r.o.Offset+off, n, flags)
}

// ZeroThenWritev passes the seed's linked zero+write through when the
// child has it, so a raw layer does not cost the fast path.
func (r *Raw) ZeroThenWritev(zoff, zn int64, zflags block.Flags, woff int64, bufs [][]byte) error {
	if err := CheckFlags(r.Caps(), zoff, zn, zflags); err != nil {
		return err
	}
	if err := r.inWindow(zoff, zn); err != nil {
		return err
	}
	if err := r.inWindow(woff, block.VecLen(bufs)); err != nil {
		return err
	}
	return block.ZeroThenWritev(r.child, r.o.Offset+zoff, zn, zflags, r.o.Offset+woff, bufs)
}

// Discard deallocates [off, off+n) of the window on the child (FL8): like
// QEMU's raw driver, which checks a discard against its size option as a
// write (raw_adjust_offset with is_write) and forwards it shifted by its
// offset. Past a fixed window it is block.ErrRange, and on a child that is
// no block.Discarder block.ErrNotSupported; either way nothing is
// discarded.
func (r *Raw) Discard(off, n int64) error {
	if err := r.inWindow(off, n); err != nil {
		return err
	}
	d, ok := r.child.(block.Discarder)
	if !ok {
		return block.ErrNotSupported
	}
	return d.Discard(r.o.Offset+off, n)
}

func (r *Raw) Flush() error {
	if r.closed.Load() {
		return block.ErrClosed
	}
	return r.child.Flush()
}

func (r *Raw) Truncate(size int64) error {
	if r.closed.Load() {
		return block.ErrClosed
	}
	if r.fixed() {
		return block.ErrNotSupported
	}
	if size < 0 {
		return block.ErrRange
	}
	return r.child.Truncate(r.o.Offset + size)
}

// Caps are the child's; an offset that is not a multiple of the child's
// alignment makes every Allocate request misaligned on the child, so
// Allocate is dropped then (FL1), and with it AllocWritten (B9 speaks of
// Allocate requests this layer then refuses).
func (r *Raw) Caps() block.Caps {
	c := r.child.Caps()
	if c.Align > 1 && r.o.Offset%c.Align != 0 {
		c.ZeroFlags &^= block.Allocate
		c.AllocWritten = false
	}
	return c
}

func (r *Raw) Close() error {
	if r.closed.Swap(true) {
		return block.ErrClosed
	}
	return r.child.Close()
}
