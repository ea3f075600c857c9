//go:build linux

package uring

import (
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Misaligned requests on a Direct file (U1 in doc.go). QEMU pads them to
// the O_DIRECT alignment and bounces them through aligned buffers on the
// same descriptor (bdrv_padding_rmw_read, a serialising request for the
// write); so do we. A buffered second descriptor would be incoherent with
// direct I/O in flight on the same page: a dirty page holding stale bytes
// can be written back over a direct write ("Page cache invalidation
// failure on direct I/O"), and a buffered read can cache stale bytes.

// bounceSize bounds one bounce transfer (rounded to the alignment); a
// larger request moves in several.
const bounceSize = 128 << 10

// bounceBuf is one pooled aligned buffer, with a one-element vector so a
// transfer through it does not allocate.
type bounceBuf struct {
	b []byte
	v [1][]byte
}

func (f *File) getBounce() *bounceBuf { return f.bounce.Get().(*bounceBuf) }

func (f *File) putBounce(bb *bounceBuf) {
	bb.v[0] = nil
	f.bounce.Put(bb)
}

// io moves p at off (aligned, len(p) a multiple of the alignment) with
// xfer: a read past EOF fills zeros (block B2).
func (bb *bounceBuf) io(f *File, write bool, off int64, p []byte) error {
	bb.v[0] = p
	err := f.xfer(write, off, bb.v[:], int64(len(p)))
	bb.v[0] = nil
	return err
}

// vecCursor walks a vector of buffers byte by byte, in order.
type vecCursor struct {
	bufs [][]byte
	i, o int // buffer index, offset in it
}

// gather copies the next len(dst) bytes of the vector into dst.
func (c *vecCursor) gather(dst []byte) {
	for len(dst) > 0 {
		k := copy(dst, c.bufs[c.i][c.o:])
		dst = dst[k:]
		c.step(k)
	}
}

// scatter copies src into the next len(src) bytes of the vector.
func (c *vecCursor) scatter(src []byte) {
	for len(src) > 0 {
		k := copy(c.bufs[c.i][c.o:], src)
		src = src[k:]
		c.step(k)
	}
}

func (c *vecCursor) step(k int) {
	c.o += k
	for c.i < len(c.bufs) && c.o >= len(c.bufs[c.i]) {
		c.o -= len(c.bufs[c.i])
		c.i++
	}
}

// bounceRead reads [off, off+total) into bufs through the aligned padded
// range. It takes no lock: a read overlapping a write in flight sees old
// or new data per aligned block (block B1), as a direct read would.
func (f *File) bounceRead(off int64, bufs [][]byte, total int64) error {
	bb := f.getBounce()
	defer f.putBounce(bb)
	c := vecCursor{bufs: bufs}
	c.step(0)
	end := off + total
	for off < end {
		ps := alignDown(off, f.align)
		pe := min(alignUp(end, f.align), ps+int64(len(bb.b)))
		w := bb.b[:pe-ps]
		if err := bb.io(f, false, ps, w); err != nil {
			return err
		}
		k := min(pe, end) - off
		c.scatter(w[off-ps : off-ps+k])
		off += k
	}
	return nil
}

// bounceWrite writes bufs at an aligned offset and length through aligned
// buffers (the buffers themselves are not aligned). The caller holds wmu
// shared: no byte outside the request is written.
func (f *File) bounceWrite(off int64, bufs [][]byte, total int64) error {
	bb := f.getBounce()
	defer f.putBounce(bb)
	c := vecCursor{bufs: bufs}
	c.step(0)
	for total > 0 {
		w := bb.b[:min(total, int64(len(bb.b)))]
		c.gather(w)
		if err := bb.io(f, true, off, w); err != nil {
			return err
		}
		off += int64(len(w))
		total -= int64(len(w))
	}
	return nil
}

// rmwWrite writes bufs at a misaligned offset or length: it reads the
// partial aligned blocks at both ends, merges the data in and writes the
// padded range. The caller holds wmu exclusively, so no other write or
// fallocate is in flight: the bytes of the padding are written back as
// they were. If the padded write grew the file past off+total, the size
// is set back (to off+total, or the old size if larger), under padMu.
func (f *File) rmwWrite(off int64, bufs [][]byte, total int64) error {
	bb := f.getBounce()
	defer f.putBounce(bb)
	end := off + total
	padEnd := alignUp(end, f.align)
	size := int64(-1)
	if padEnd > end && padEnd > f.eof.Load() {
		// eof is only a lower bound: ask the kernel. Size and DataRun
		// wait until the size is set back (padMu).
		f.padMu.Lock()
		defer f.padMu.Unlock()
		n, err := f.fileSize()
		if err != nil {
			return &block.OpError{Op: "write", Off: off, Len: total, Err: err}
		}
		size = n
	}
	c := vecCursor{bufs: bufs}
	c.step(0)
	a := f.align
	for off < end {
		ps := alignDown(off, a)
		pe := min(padEnd, ps+int64(len(bb.b)))
		w := bb.b[:pe-ps]
		head := off > ps
		if head {
			if err := bb.io(f, false, ps, w[:a]); err != nil {
				return err
			}
		}
		if pe > end && (pe-a > ps || !head) {
			if err := bb.io(f, false, pe-a, w[len(w)-int(a):]); err != nil {
				return err
			}
		}
		k := min(pe, end) - off
		c.gather(w[off-ps : off-ps+k])
		if err := bb.io(f, true, ps, w); err != nil {
			return err
		}
		off += k
	}
	if size >= 0 && padEnd > max(size, end) {
		if err := unix.Ftruncate(f.fd, max(size, end)); err != nil {
			return &block.OpError{Op: "write", Off: end - total, Len: total, Err: err}
		}
	}
	return nil
}
