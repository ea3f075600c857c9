//go:build linux

package uring

import (
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Data requests: Readv and Writev, down to one backend call (xfer) and
// its short transfers (R6).

// Readv implements block.Device.
func (f *File) Readv(off int64, bufs [][]byte) error {
	if err := f.enter(); err != nil { // closed first (B7)
		return err
	}
	defer f.life.RUnlock()
	total := block.VecLen(bufs)
	if err := block.CheckRange(off, total); err != nil {
		return err
	}
	return f.readv(off, bufs, total)
}

// readv is Readv inside the File (entered, range checked).
func (f *File) readv(off int64, bufs [][]byte, total int64) error {
	if total == 0 {
		return nil
	}
	if f.direct && !f.fast(off, total, bufs) {
		// Misaligned on O_DIRECT: the padded range through a bounce
		// buffer (U1). No lock: a read overlapping a write in flight may
		// see old or new data per aligned block (block B1).
		f.m.misaligned.Add(1)
		return f.bounceRead(off, bufs, total)
	}
	return f.chunked(false, off, bufs)
}

// fast reports whether a request on a Direct file can go to the kernel
// as it is: offset, length and every buffer O_DIRECT-aligned.
func (f *File) fast(off, total int64, bufs [][]byte) bool {
	return block.Aligned(off, total, f.align) && block.VecAligned(bufs, f.memAlign, f.align)
}

// Writev implements block.Device.
func (f *File) Writev(off int64, bufs [][]byte) error {
	total := block.VecLen(bufs)
	if err := f.enterWrite(off, total, 0); err != nil {
		return err
	}
	defer f.life.RUnlock()
	return f.writev(off, bufs, total)
}

// writev writes under the EOF gate (U3): writes ending past the known EOF
// hold it shared so that extending fallocates (exclusive) never overlap
// them. On a Direct file it also holds wmu (U1): shared for a write with
// aligned offset and length (bounced if its buffers are not aligned),
// exclusively for a read-modify-write.
func (f *File) writev(off int64, bufs [][]byte, total int64) error {
	if total == 0 {
		return nil
	}
	end := off + total
	g := f.takeGate(0, end)
	var err error
	switch {
	case !f.direct:
		err = f.chunked(true, off, bufs)
	case f.fast(off, total, bufs):
		f.lockWMU(false, &g, 0, end)
		err = f.chunked(true, off, bufs)
		f.wmu.RUnlock()
	case block.Aligned(off, total, f.align):
		f.m.misaligned.Add(1)
		f.lockWMU(false, &g, 0, end)
		err = f.bounceWrite(off, bufs, total)
		f.wmu.RUnlock()
	default:
		f.m.misaligned.Add(1)
		f.m.rmw.Add(1)
		f.lockWMU(true, &g, 0, end)
		err = f.rmwWrite(off, bufs, total)
		f.wmu.Unlock()
	}
	if err == nil && g != noGate {
		f.bumpEOF(end)
	}
	f.unlockGate(g)
	return err
}

// bumpEOF raises eof to end. Callers hold eofGate (shared or exclusive,
// U3): an ungated request ended inside eof when it started, and a
// Truncate may have shrunk the file below its end since; raising eof
// then would make it more than the size. (A block device's size, which
// never shrinks, is the exception: deviceSize.)
func (f *File) bumpEOF(end int64) {
	for {
		cur := f.eof.Load()
		if end <= cur || f.eof.CompareAndSwap(cur, end) {
			return
		}
	}
}

// chunked moves bufs one chunk (nextChunk) a call.
func (f *File) chunked(write bool, off int64, bufs [][]byte) error {
	for {
		c, n, rest := nextChunk(bufs)
		if err := f.xfer(write, off, c, n); err != nil || len(rest) == 0 {
			return err
		}
		off += n
		bufs = rest
	}
}

// nextChunk splits the first chunk c, of n bytes, off bufs: at most
// IOV_MAX buffers and maxRW bytes, cut between buffers, or inside a
// first buffer longer than maxRW. The kernel moves at most MAX_RW_COUNT
// (2 GiB - 4 KiB) a call and ends the rest short, and on O_DIRECT with
// sectors above 4 KiB that is no whole sector: the call failed with
// EINVAL. maxRW (1 GiB) is whole sectors, and a cut between buffers
// leaves every buffer as aligned as it was (U1). Only the cut of one
// long buffer allocates.
func nextChunk(bufs [][]byte) (c [][]byte, n int64, rest [][]byte) {
	k := 0
	for k < len(bufs) && k < maxIov && n+int64(len(bufs[k])) <= maxRW {
		n += int64(len(bufs[k]))
		k++
	}
	if k > 0 || len(bufs) == 0 {
		return bufs[:k], n, bufs[k:]
	}
	rest = make([][]byte, len(bufs))
	copy(rest, bufs)
	rest[0] = bufs[0][maxRW:]
	return [][]byte{bufs[0][:maxRW]}, maxRW, rest
}

func opName(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// xfer moves total bytes, resubmitting after short transfers and filling
// zeros on reads past EOF (block B2). On a Direct file the request is aligned
// (f.fast); the caller holds wmu for writes.
func (f *File) xfer(write bool, off int64, bufs [][]byte, total int64) error {
	if total == 0 {
		return nil
	}
	for {
		n, err := f.io.rw(write, off, bufs)
		if err != nil {
			if err == block.ErrClosed {
				return err
			}
			return &block.OpError{Op: opName(write), Off: off, Len: total, Err: err}
		}
		if int64(n) == total {
			return nil
		}
		if n == 0 {
			if !write {
				for _, b := range bufs {
					clear(b) // past EOF reads as zeros (block B2)
				}
				return nil
			}
			return &block.OpError{Op: "write", Off: off, Len: total, Err: unix.ENOSPC}
		}
		f.m.short.Add(1)
		if f.direct && int64(n)%f.align != 0 {
			if !write {
				// O_DIRECT reads stop at an unaligned offset only at
				// the end of the file: the rest reads as zeros (block B2).
				zeroFrom(bufs, n)
				return nil
			}
			// Rewrite from the last aligned offset: those bytes are
			// ours, and the remainder stays aligned.
			n -= int(int64(n) % f.align)
		}
		off += int64(n)
		total -= int64(n)
		bufs = advance(bufs, n)
		if f.direct && !block.VecAligned(bufs, f.memAlign, f.align) {
			// The rest starts inside a buffer at an address O_DIRECT
			// refuses (MemAlign > Align): bounce it.
			if write {
				return f.bounceWrite(off, bufs, total)
			}
			return f.bounceRead(off, bufs, total)
		}
	}
}

// zeroFrom clears bufs from byte n on.
func zeroFrom(bufs [][]byte, n int) {
	for _, b := range bufs {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		clear(b[n:])
		n = 0
	}
}

// advance drops the first n bytes of bufs into a fresh vector (short
// transfers are rare; the caller's vector is never modified).
func advance(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	out := make([][]byte, len(bufs))
	copy(out, bufs)
	if len(out) > 0 {
		out[0] = out[0][n:]
	}
	return out
}
