package block

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Flags are request flags, modelled on QEMU's BDRV_REQ_* flags.
type Flags uint32

const (
	// Allocate (QEMU: BDRV_REQ_NO_FALLBACK, the seed's BDRV_REQ_ALLOCATE)
	// asks WriteZeroes to zero the range efficiently and reserve its space,
	// or fail with ErrNotSupported. It never falls back to writing zeros.
	Allocate Flags = 1 << iota
	// MayUnmap lets WriteZeroes deallocate the range (punch a hole) as long
	// as it reads back as zeros.
	MayUnmap
	// Serialising makes the request wait for (and block) every overlapping
	// in-flight request.
	Serialising
	// NoWait, with Serialising, fails with ErrBusy instead of waiting.
	NoWait
)

// NoFallback is QEMU's name for Allocate.
const NoFallback = Allocate

var flagNames = []string{"Allocate", "MayUnmap", "Serialising", "NoWait"}

func (f Flags) String() string {
	if f == 0 {
		return "0"
	}
	var parts []string
	for i, n := range flagNames {
		if f&(1<<i) != 0 {
			parts = append(parts, n)
			f &^= 1 << i
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", uint32(f)))
	}
	return strings.Join(parts, "|")
}

// Caps describes what a device can do.
type Caps struct {
	// ZeroFlags are the flags WriteZeroes honours (QEMU's
	// supported_zero_flags). A request with a flag outside this set, other
	// than Serialising/NoWait when ReqFlags has them, fails with
	// ErrNotSupported.
	ZeroFlags Flags
	// ReqFlags are the flags Readv/Writev/WriteZeroes honour for
	// scheduling (Serialising, NoWait).
	ReqFlags Flags
	// Align is the request alignment in bytes for offsets and lengths on
	// the efficient path (512 or 4096 for O_DIRECT files, 1 otherwise).
	// Misaligned data requests still work, more slowly; a misaligned
	// Allocate request is refused (ErrNotSupported) when its edges hold
	// data (B3).
	Align int64
	// MemAlign is the buffer address alignment the fast path needs.
	MemAlign int
	// ZeroAlign, if larger than Align, is the alignment WriteZeroes with
	// Allocate needs (e.g. the host filesystem's block size: zeroing a
	// partial block goes through the page cache); a range not aligned to
	// it is ErrNotSupported unless what lies beside it lets the device
	// zero it efficiently all the same (B3). 0 means Align.
	ZeroAlign int64
	// Media says what backs the device, as far as it can tell; engines
	// use it to pick strategies whose cost depends on the medium (e.g.
	// whether streaming zeros ahead is cheap). MediaUnknown when unsure.
	Media Media
	// Metered says writes to the device are rate-limited for this
	// process (cgroup blkio throttle or io.max): every byte written spends
	// a budget, however cheap the medium.
	Metered bool
	// AllocWritten says WriteZeroes with Allocate leaves the range
	// written, not unwritten (B9): later first writes into it are
	// overwrites, so zeroing it again ahead of them buys nothing.
	AllocWritten bool
	// MergesWrites says adjacent writes in flight together may be merged
	// into one host request (B10).
	MergesWrites bool
	// Fixed says the device's size is its own and never grows (a block
	// device): nothing past the end exists to reserve or fill ahead, and
	// no range is known to read as zeros. False when unknown.
	Fixed bool
}

// Media is the kind of storage under a device.
type Media uint8

const (
	MediaUnknown Media = iota
	MediaRAM           // RAM-backed: zram, brd, pmem, tmpfs, a loop over tmpfs
	MediaSSD           // non-rotational block device
	MediaHDD           // rotational block device
)

func (m Media) String() string {
	switch m {
	case MediaRAM:
		return "ram"
	case MediaSSD:
		return "ssd"
	case MediaHDD:
		return "hdd"
	}
	return "unknown"
}

// Device is the storage under an image. See the package doc for the
// invariants every implementation keeps.
type Device interface {
	// Readv fills bufs, in order, from the bytes at off. Bytes past the
	// end of the device read as zeros (B2).
	Readv(off int64, bufs [][]byte) error
	// Writev writes bufs, in order, at off, growing the device if needed.
	Writev(off int64, bufs [][]byte) error
	// WriteZeroes makes [off, off+n) read as zeros, growing the device if
	// needed (B3, B4).
	WriteZeroes(off, n int64, flags Flags) error
	// Flush makes completed writes durable (B6).
	Flush() error
	// Size is the current size in bytes.
	Size() (int64, error)
	// Truncate grows or shrinks the device to size bytes; grown space reads
	// as zeros.
	Truncate(size int64) error
	// Caps reports the device's capabilities; it does not change after
	// the device is opened, except that a backend may drop Allocate from
	// ZeroFlags once the host refused it.
	Caps() Caps
	// Close releases the device. Requests after Close fail with
	// os.ErrClosed (B7).
	Close() error
}

// Typed errors. Match them with errors.Is.
var (
	// ErrNotSupported: the device cannot honour the request as flagged
	// (QEMU: -ENOTSUP). For Allocate it means "do the slow path yourself".
	ErrNotSupported = errors.New("block: operation not supported")
	// ErrBusy: a Serialising|NoWait request overlapped an in-flight one
	// (QEMU: -EBUSY).
	ErrBusy = errors.New("block: overlapping request in flight")
	// ErrClosed is os.ErrClosed, returned after Close.
	ErrClosed = os.ErrClosed
	// ErrRange: negative offset or length, or overflow.
	ErrRange = errors.New("block: offset or length out of range")
	// ErrReadOnly: a write to a read-only device.
	ErrReadOnly = errors.New("block: device is read-only")
	// ErrFlushFailed: an earlier Flush failed, and writes completed
	// before it may be lost; every later Flush fails with it (B6) until
	// the device is reopened.
	ErrFlushFailed = errors.New("block: an earlier flush failed; writes before it may be lost")
)

// OpError wraps a device error with the operation and range.
type OpError struct {
	Op  string
	Off int64
	Len int64
	Err error
}

func (e *OpError) Error() string {
	return fmt.Sprintf("%s [0x%x, +0x%x): %v", e.Op, e.Off, e.Len, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// VecLen is the total length of bufs.
func VecLen(bufs [][]byte) int64 {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	return n
}

// CheckRange validates off and n.
func CheckRange(off, n int64) error {
	if off < 0 || n < 0 || off+n < off {
		return ErrRange
	}
	return nil
}

// ReadAt reads len(p) bytes at off from d (a one-buffer Readv).
func ReadAt(d Device, p []byte, off int64) error {
	var v [1][]byte
	v[0] = p
	return d.Readv(off, v[:])
}

// WriteAt writes p at off to d (a one-buffer Writev).
func WriteAt(d Device, p []byte, off int64) error {
	var v [1][]byte
	v[0] = p
	return d.Writev(off, v[:])
}

// Aligned reports whether off and n are multiples of align.
func Aligned(off, n, align int64) bool {
	if align <= 1 {
		return true
	}
	return off%align == 0 && n%align == 0
}

// ReaderAt adapts a Device to io.ReaderAt (full reads; zeros past EOF).
type ReaderAt struct{ D Device }

// ReadAt implements io.ReaderAt.
func (r ReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := ReadAt(r.D, p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

var _ io.ReaderAt = ReaderAt{}

// ZeroWriter is an optional Device extension for the seed's fast path: zero
// [zoff, zoff+zn) with zflags, then write bufs at woff, ordered by the
// device (on io_uring: one submission, the fallocate linked before the write
// with IOSQE_IO_LINK). If the zeroing fails, its error is returned, and
// the write may have been performed or not (the kernel runs a linked
// write after a failed fallocate): the write's range then holds what a
// failed write leaves, old or new bytes. So a caller writes only where a
// failure leaves nothing it relies on (qcow2: a cluster being allocated,
// linked only after success), and on ErrNotSupported or ErrBusy falls
// back to writing zero buffers and the data again.
type ZeroWriter interface {
	ZeroThenWritev(zoff, zn int64, zflags Flags, woff int64, bufs [][]byte) error
}

// ZeroThenWritev zeroes [zoff, zoff+zn) of d with zflags and then writes
// bufs at woff: through d's ZeroWriter when it has one, else as a
// WriteZeroes followed, if that succeeds, by a Writev.
func ZeroThenWritev(d Device, zoff, zn int64, zflags Flags, woff int64, bufs [][]byte) error {
	if zw, ok := d.(ZeroWriter); ok {
		return zw.ZeroThenWritev(zoff, zn, zflags, woff, bufs)
	}
	if err := d.WriteZeroes(zoff, zn, zflags); err != nil {
		return err
	}
	return d.Writev(woff, bufs)
}
