//go:build linux

package uring

import (
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// ZeroThenWritev implements block.ZeroWriter. With Allocate on the ring the
// fallocate and the write are one linked submission (IOSQE_IO_LINK);
// otherwise they run one after the other.
func (f *File) ZeroThenWritev(zoff, zn int64, zflags block.Flags, woff int64, bufs [][]byte) error {
	total := block.VecLen(bufs)
	if err := f.enterWrite(woff, total, zflags); err != nil {
		return err
	}
	defer f.life.RUnlock()
	if err := block.CheckRange(zoff, zn); err != nil {
		return err
	}
	if err := f.checkDevice("write_zeroes", zoff, zn); err != nil {
		return err
	}
	if zflags&block.Allocate == 0 || zn == 0 {
		if zn > 0 {
			if err := f.writeZeroes(zoff, zn, zflags); err != nil {
				return err
			}
		}
		return f.writev(woff, bufs, total)
	}
	if !f.allocOK.Load() || !block.Aligned(zoff, zn, f.zeroAlign) {
		return block.ErrNotSupported
	}
	// Linked only once an Allocate zeroing has succeeded here (U4): the
	// kernel does not cancel a write linked after a failed fallocate, so
	// a first request refused that way would write its data and report
	// ErrNotSupported. A success proves the linked mode too: ext4, where
	// allocZero may take WRITE_ZEROES, has ZERO_RANGE wherever it has
	// that (extent files), and a block device links WRITE_ZEROES itself.
	// One SQE only for what chunked would send in one call (R6): at
	// most IOV_MAX buffers and maxRW bytes. A longer vector in one
	// writev moves at most MAX_RW_COUNT, which on O_DIRECT with sectors
	// above 4 KiB is no whole sector: EINVAL.
	fast := f.link != nil && f.allocDone.Load() && total > 0 && len(bufs) <= maxIov &&
		total <= maxRW && (!f.direct || f.fast(woff, total, bufs))
	if !fast {
		if err := f.allocZero(zoff, zn); err != nil {
			return err
		}
		return f.writev(woff, bufs, total)
	}
	return f.zeroThenWriteLinked(zoff, zn, woff, bufs, total)
}

// zeroThenWriteLinked is ZeroThenWritev with Allocate as one linked
// submission (U4): fallocate(ZERO_RANGE) of [zoff, zoff+zn), then the
// write of bufs (total bytes, aligned on a Direct file) at woff.
func (f *File) zeroThenWriteLinked(zoff, zn, woff int64, bufs [][]byte, total int64) error {
	// Gate (U3): exclusive if the fallocate extends the file, shared if
	// only the write does.
	zend, wend := zoff+zn, woff+total
	g := f.takeGate(zend, wend)
	if f.direct {
		// Both SQEs modify the file: no read-modify-write meanwhile (U1).
		f.lockWMU(false, &g, zend, wend)
		defer f.wmu.RUnlock()
	}
	defer f.unlockGate(g)
	gated := g != noGate // eof is raised only then (bumpEOF)
	f.m.fallocates.Add(1)
	mode := f.allocMode()
	zres, wres, err := f.link.linked(mode, zoff, zn, woff, bufs)
	if err != nil {
		return err
	}
	if zres < 0 {
		// The write ran all the same (wres >= 0) unless the kernel
		// cancelled it (-ECANCELED): IORING_OP_FALLOCATE does not fail
		// its link (U4). Only after an Allocate zeroing succeeded here,
		// so this is a failure other than a refusal, or a mode refused
		// late (a device that stopped taking WRITE_ZEROES).
		zerr := unix.Errno(-zres)
		if mode == unix.FALLOC_FL_WRITE_ZEROES && refused(zerr) {
			f.refuseWriteZeroes(zerr)
		}
		return f.zeroErr(zerr, mode, zoff, zn)
	}
	if gated {
		f.bumpEOF(zend)
	}
	if wres < 0 {
		return &block.OpError{Op: "write", Off: woff, Len: total, Err: unix.Errno(-wres)}
	}
	if int64(wres) < total {
		f.m.short.Add(1)
		if wres == 0 {
			return &block.OpError{Op: "write", Off: woff, Len: total, Err: unix.ENOSPC}
		}
		n := int64(wres)
		if f.direct {
			n -= n % f.align // resume aligned (R6)
		}
		rest := advance(bufs, int(n))
		var err error
		if f.direct && !block.VecAligned(rest, f.memAlign, f.align) {
			err = f.bounceWrite(woff+n, rest, total-n)
		} else {
			err = f.chunked(true, woff+n, rest)
		}
		if err != nil {
			return err
		}
	}
	if gated {
		f.bumpEOF(wend)
	}
	return nil
}
