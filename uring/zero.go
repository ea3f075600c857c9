//go:build linux

package uring

import (
	"sync"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Zeroing: WriteZeroes with and without Allocate (U2), under the EOF
// gate (U3). The linked zero-then-write is linked.go's.

// fallocate runs fallocate(mode) on the backend. On a Direct file it
// holds wmu shared: a read-modify-write must not rewrite zeroed bytes
// with what it read before (U1). A mode that may grow the file passes
// the gate g it holds (takeGate), which lockWMU raises if a Truncate
// shrank the file below off+n meanwhile (U3); KEEP_SIZE passes nil.
func (f *File) fallocate(mode uint32, off, n int64, g *gate) error {
	f.m.fallocates.Add(1)
	if f.direct {
		if g != nil {
			f.lockWMU(false, g, off+n, 0)
		} else {
			f.wmu.RLock()
		}
		defer f.wmu.RUnlock()
	}
	return f.io.fallocate(mode, off, n)
}

func checkZeroFlags(flags block.Flags) error {
	if flags&^(block.Allocate|block.MayUnmap) != 0 {
		// Serialising/NoWait: the engine serialises itself (U7).
		return block.ErrNotSupported
	}
	return nil
}

// WriteZeroes implements block.Device (block B3, B4).
func (f *File) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := f.enterWrite(off, n, flags); err != nil {
		return err
	}
	defer f.life.RUnlock()
	return f.zeroes(off, n, flags)
}

// zeroes is WriteZeroes on a File entered, or held open by a queue
// (U12), with the range and flags checked (checkWrite).
func (f *File) zeroes(off, n int64, flags block.Flags) error {
	if n == 0 {
		return nil
	}
	if flags&block.Allocate != 0 {
		return f.allocZero(off, n)
	}
	return f.writeZeroes(off, n, flags)
}

// allocZero is WriteZeroes with Allocate: fallocate(WRITE_ZEROES or
// ZERO_RANGE) or ErrNotSupported with nothing written. The range must
// cover whole filesystem blocks (U2): a partial block is zeroed through
// the page cache.
func (f *File) allocZero(off, n int64) error {
	if !f.allocOK.Load() || !block.Aligned(off, n, f.zeroAlign) {
		return block.ErrNotSupported
	}
	g := f.takeGate(off+n, 0)
	mode, err := f.allocFallocate(off, n, &g)
	if err == nil {
		f.allocDone.Store(true) // the linked ZeroThenWritev may run (U4)
		if g != noGate {
			f.bumpEOF(off + n)
		}
	}
	f.unlockGate(g)
	return f.zeroErr(err, mode, off, n)
}

// allocFallocate zeroes [off, off+n) with space allocated (U2):
// FALLOC_FL_WRITE_ZEROES while it is believed to work, which leaves
// written extents the device zeroed by unmapping (efficient or refused:
// the kernel never writes zero buffers for it either); else ZERO_RANGE,
// which leaves unwritten extents. A refusal turns WRITE_ZEROES off for
// good and the same request goes on with ZERO_RANGE: zeroing is
// idempotent, so whatever a refused call did is harmless. Never zero
// buffers (block B3).
//
// A block device has no ZERO_RANGE of its own: the kernel turns it into
// a WRITE ZEROES command and, where the device has none or refuses it
// (a loop device over tmpfs), writes zero pages instead, silently
// (blkdev_issue_zeroout without BLKDEV_ZERO_NOFALLBACK). Only
// WRITE_ZEROES is efficient or refused there (U15), as QEMU's
// host_device refuses BDRV_REQ_NO_FALLBACK without MAY_UNMAP; without it
// the request is refused. It returns the mode of the last fallocate it
// tried (or would have), for the error.
func (f *File) allocFallocate(off, n int64, g *gate) (uint32, error) {
	if f.wzOK.Load() {
		f.m.wzFallocates.Add(1)
		err := f.fallocate(unix.FALLOC_FL_WRITE_ZEROES, off, n, g)
		if err == nil || !refused(err) {
			return unix.FALLOC_FL_WRITE_ZEROES, err
		}
		f.m.wzRefused.Add(1)
		f.refuseWriteZeroes(err)
		if f.blockDev {
			return unix.FALLOC_FL_WRITE_ZEROES, err // refused: zeroErr drops Allocate
		}
	}
	if f.blockDev {
		return unix.FALLOC_FL_WRITE_ZEROES, unix.EOPNOTSUPP // refused earlier
	}
	return unix.FALLOC_FL_ZERO_RANGE, f.fallocate(unix.FALLOC_FL_ZERO_RANGE, off, n, g)
}

// allocMode is the fallocate mode of the linked ZeroThenWritev (U4):
// ZERO_RANGE, or WRITE_ZEROES on a block device, where ZERO_RANGE may
// write zero pages (allocFallocate).
func (f *File) allocMode() uint32 {
	if f.blockDev {
		return unix.FALLOC_FL_WRITE_ZEROES
	}
	return unix.FALLOC_FL_ZERO_RANGE
}

// refuseWriteZeroes remembers that FALLOC_FL_WRITE_ZEROES was refused
// with err: no later request tries it, and Caps() drops AllocWritten.
func (f *File) refuseWriteZeroes(err error) {
	why := "refused: " + err.Error()
	f.wzWhy.Store(&why)
	f.wzOK.Store(false)
}

// initZeroing picks the Allocate zeroing mode at Open (U2): WRITE_ZEROES
// when Options allow it and writeZeroesSupport believes it may work, from
// the kernel release and the device's sysfs queue, without a probe that
// writes the file; ZERO_RANGE otherwise.
func (f *File) initZeroing(o Options) {
	ok, why := false, "off"
	if !o.NoWriteZeroes {
		ok, why = writeZeroesSupport(f.fd, kernelRelease())
	}
	f.wzWhy.Store(&why)
	f.wzOK.Store(ok)
	if f.blockDev && !ok {
		f.allocOK.Store(false) // no efficient zeroing there (allocFallocate)
	}
}

// zeroErr is the error of a zeroing with Allocate whose fallocate (mode)
// returned err: a refusal drops Allocate from Caps and is a RefusedError
// naming mode.
func (f *File) zeroErr(err error, mode uint32, off, n int64) error {
	switch {
	case err == nil:
		return nil
	case err == block.ErrClosed:
		return err
	case refused(err):
		f.allocOK.Store(false)
		return &RefusedError{Mode: modeName(mode), Err: err}
	}
	return &block.OpError{Op: "write_zeroes", Off: off, Len: n, Err: err}
}

// writeZeroes is WriteZeroes without Allocate: PUNCH_HOLE|KEEP_SIZE (with
// MayUnmap, inside EOF), else ZERO_RANGE, else zero buffers. PUNCH_HOLE
// and ZERO_RANGE are never combined in one call. On a Direct file only
// whole filesystem blocks are fallocated; partial ones at the edges get
// zero buffers (U2): the filesystem would zero them in the page cache.
// A block device takes whole logical sectors only (EINVAL otherwise,
// which must not read as a refused mode), so it is split the same way.
func (f *File) writeZeroes(off, n int64, flags block.Flags) error {
	if (f.direct || f.blockDev) && !block.Aligned(off, n, f.zeroAlign) {
		s, e := alignUp(off, f.zeroAlign), alignDown(off+n, f.zeroAlign)
		if s >= e {
			return f.zeroBufs(off, n)
		}
		if err := f.zeroBufs(off, s-off); err != nil {
			return err
		}
		if err := f.fallocZeroes(s, e-s, flags); err != nil {
			return err
		}
		return f.zeroBufs(e, off+n-e)
	}
	return f.fallocZeroes(off, n, flags)
}

func alignDown(x, a int64) int64 { return x - x%a }
func alignUp(x, a int64) int64   { return alignDown(x+a-1, a) }

// fallocZeroes is writeZeroes for a range it may fallocate.
func (f *File) fallocZeroes(off, n int64, flags block.Flags) error {
	if flags&block.MayUnmap != 0 && f.punchOK.Load() && off+n <= f.eof.Load() {
		err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n, nil)
		if err == nil {
			return nil
		}
		if err == block.ErrClosed {
			return err
		}
		if refused(err) {
			f.punchOK.Store(false)
		}
	}
	if f.zeroOK.Load() {
		g := f.takeGate(off+n, 0)
		err := f.fallocate(unix.FALLOC_FL_ZERO_RANGE, off, n, &g)
		if err == nil && g != noGate {
			f.bumpEOF(off + n)
		}
		f.unlockGate(g)
		if err == nil || err == block.ErrClosed {
			return err
		}
		if err == unix.EOPNOTSUPP {
			f.zeroOK.Store(false)
		}
	}
	return f.zeroBufs(off, n)
}

// zeroVecs holds zeroBufs' vectors: one on its stack would escape through
// the backend interface and cost an allocation per call (R5). They only
// ever point into block.ZeroBuf.
var zeroVecs = sync.Pool{New: func() any { return new([16][]byte) }}

// zeroBufs writes n zero bytes at off; not via block.WriteZeroBuffers,
// which would re-enter Writev and take f.life recursively.
func (f *File) zeroBufs(off, n int64) error {
	z := block.ZeroBuf()
	vp := zeroVecs.Get().(*[16][]byte)
	defer zeroVecs.Put(vp)
	v := vp[:]
	for n > 0 {
		k := 0
		var chunk int64
		for k < len(v) && chunk < n {
			c := min(int64(len(z)), n-chunk)
			v[k] = z[:c]
			chunk += c
			k++
		}
		if err := f.writev(off, v[:k], chunk); err != nil {
			return err
		}
		off += chunk
		n -= chunk
	}
	return nil
}
