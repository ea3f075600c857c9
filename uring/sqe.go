//go:build linux

package uring

import (
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// sqe describes one SQE to queue.
type sqe struct {
	op     uint8
	flags  uint8
	fd     int32
	addr   uint64
	len    uint32
	off    uint64
	opFlag uint32
	buf    uint16 // registered buffer index, with hasBuf (READ/WRITE_FIXED)
	hasBuf bool
}

// fill writes e, with user_data ud, into the SQE at SQ position t. It is
// the only code that writes an SQE. The caller holds mu and t is not
// published yet (t >= *sqTail): the kernel never reads an SQE being
// written (R1, R8).
func (r *ring) fill(t uint32, e sqe, ud uint64) {
	q := &r.sqes[t&r.sqMask]
	q.Reset()
	buf := r.applyFeat(&e)
	q.PrepOperation(e.op, e.fd, e.addr, e.len, e.off)
	switch {
	case e.hasBuf:
		q.SetBufIndex(e.buf)
	case buf >= 0:
		q.SetBufIndex(uint16(buf))
	}
	r.sqFixed[t&r.sqMask] = e.hasBuf || buf >= 0
	if e.opFlag != 0 {
		q.SetOpFlags(e.opFlag)
	}
	if e.flags != 0 {
		q.SetFlags(e.flags)
	}
	q.SetUserData(ud)
}

// countFixed adds the fixed SQEs among [from, to), which are being
// published (Metrics.Fixed): counted then, a staged SQE that a merge
// rewrote as a vector (R8) is never counted, and the count only grows.
func (r *ring) countFixed(from, to uint32) {
	var n uint64
	for t := from; t != to; t++ {
		if r.sqFixed[t&r.sqMask] {
			n++
		}
	}
	if n > 0 {
		r.m.fixed.Add(n)
	}
}

// rwSQE is a read or write of the buffers in iov at off: IORING_OP_READ/
// WRITE for one buffer when the kernel has them, else READV/WRITEV.
func rwSQE(write bool, fd int, off int64, iov []unix.Iovec) sqe {
	e := sqe{fd: int32(fd), off: uint64(off)}
	if len(iov) == 1 && iov[0].Len <= maxRW && probeOps().has(iosys.IORING_OP_READ) {
		// IORING_OP_READ/WRITE take a u32 length; bigger goes as a vector.
		e.addr = uint64(uintptr(unsafe.Pointer(iov[0].Base)))
		e.len = uint32(iov[0].Len)
		e.op = iosys.IORING_OP_READ
		if write {
			e.op = iosys.IORING_OP_WRITE
		}
		return e
	}
	return vecSQE(write, int32(fd), off, iov)
}

// vecSQE is a readv or writev of iov at off.
func vecSQE(write bool, fd int32, off int64, iov []unix.Iovec) sqe {
	e := sqe{op: iosys.IORING_OP_READV, fd: fd, addr: iovAddr(iov), len: uint32(len(iov)), off: uint64(off)}
	if write {
		e.op = iosys.IORING_OP_WRITEV
	}
	return e
}

func fallocSQE(fd int, mode uint32, off, n int64) sqe {
	// IORING_OP_FALLOCATE: len goes in addr, mode in len.
	return sqe{op: iosys.IORING_OP_FALLOCATE, fd: int32(fd), addr: uint64(n), len: mode, off: uint64(off)}
}

func fsyncSQE(fd int) sqe {
	return sqe{op: iosys.IORING_OP_FSYNC, fd: int32(fd), opFlag: iosys.IORING_FSYNC_DATASYNC}
}

// setIov fills dst from bufs, storing real pointers so the buffers escape
// to the heap and are not moved by stack growth while the kernel uses them.
func setIov(dst []unix.Iovec, bufs [][]byte) []unix.Iovec {
	dst = dst[:0]
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		dst = append(dst, bufIovec(b))
	}
	return dst
}

// bufIovec is the iovec of b, with a real pointer (setIov).
func bufIovec(b []byte) unix.Iovec {
	var v unix.Iovec
	v.Base = unsafe.SliceData(b)
	v.SetLen(len(b))
	return v
}

func iovAddr(v []unix.Iovec) uint64 { return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(v)))) }
