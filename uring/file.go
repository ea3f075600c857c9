//go:build linux

package uring

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	iosys "github.com/iceber/iouring-go/syscall"
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Backend selects how a File does its I/O.
type Backend int

const (
	// Auto uses the ring when io_uring works here, else Threads.
	Auto Backend = iota
	// Ring requires io_uring; Open fails if it is unavailable.
	Ring
	// Threads uses plain pread/pwrite/fallocate/fdatasync syscalls, at most
	// Options.Workers at a time (QEMU's aio=threads).
	Threads
)

func (b Backend) String() string {
	switch b {
	case Auto:
		return "auto"
	case Ring:
		return "io_uring"
	case Threads:
		return "threads"
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// Options configure Open.
type Options struct {
	ReadOnly bool
	// Direct opens the file with O_DIRECT. Misaligned requests still work,
	// on the same descriptor, through aligned bounce buffers (F1).
	Direct bool
	// Create creates the file if it does not exist (mode Perm, default 0644).
	Create bool
	Perm   os.FileMode
	// Backend picks the I/O path (default Auto).
	Backend Backend
	// Entries is the ring's request-slot count: the maximum number of
	// requests in flight (default 256). The SQ is sized 2*Entries so a
	// linked fallocate+write pair always fits.
	Entries int
	// Workers bounds concurrent syscalls on the Threads backend (default
	// 64). The syscalls run on the calling goroutines, whose OS threads the
	// Go runtime pools: a worker pool without a hand-off per request.
	Workers int
	// SyscallFallocate runs standalone fallocates (WriteZeroes) as direct
	// fallocate(2) calls even on the ring. IORING_OP_FALLOCATE always goes
	// through an io-wq worker and costs ~5x more at low queue depth
	// (BenchmarkFallocate64K). Linked ZeroThenWritev chains stay on the
	// ring.
	SyscallFallocate bool
	// Hybrid serves a data request with a plain pread/pwrite on the
	// calling goroutine when no other data request is in progress (nothing
	// to batch with), and uses the ring as soon as requests overlap. On the 2-vCPU test VM a
	// QD1 O_DIRECT write is ~10-40% faster that way; QD64 is unchanged.
	Hybrid bool
	// NoMerge turns off merging of adjacent data requests into one SQE
	// (R8 in doc.go), e.g. to measure what merging buys.
	NoMerge bool
}

const (
	defaultEntries = 256
	maxEntries     = 8192 // the SQ is 2*Entries; the kernel caps it at 32768
	defaultWorkers = 64
	maxRW          = 1 << 30 // largest single read/write we ask for
)

// File is a block.Device over one host file, with I/O on an io_uring (or
// the plain-syscall backend). See doc.go for its invariants.
type File struct {
	path      string
	fd        int // O_DIRECT when direct; the only descriptor (F1)
	readOnly  bool
	direct    bool
	align     int64
	memAlign  int
	zeroAlign int64 // Allocate zeroing alignment: filesystem block (F2)

	// wmu orders writes on a Direct file against read-modify-writes (F1):
	// every request that modifies the file (write, fallocate) holds it
	// shared, a misaligned write and Truncate hold it exclusively.
	wmu    sync.RWMutex
	bounce sync.Pool // *bounceBuf, for misaligned requests on a Direct file

	media    block.Media // what stores the file (F9)
	mediaWhy string
	metered  bool // writes throttled by cgroup (F9)

	ring    *ring // nil on the Threads backend
	backend Backend
	reason  string
	sem     chan struct{} // Threads backend queue depth

	m counters

	life   sync.RWMutex // held shared by every request, exclusively by Close
	closed atomic.Bool
	done   chan struct{} // closed by Close: aborts waits for a slot

	allocOK atomic.Bool  // fallocate ZERO_RANGE has not been refused
	zeroOK  atomic.Bool  // same, for WriteZeroes without Allocate
	punchOK atomic.Bool  // PUNCH_HOLE|KEEP_SIZE has not been refused
	fallocK bool         // the ring supports IORING_OP_FALLOCATE
	sysFall bool         // Options.SyscallFallocate
	hybrid  bool         // Options.Hybrid
	active  atomic.Int32 // data requests in progress (Hybrid only)

	// eof is a lower bound of the file size (F3 in doc.go); eofGate
	// serialises size-extending zeroing against writes past eof.
	eof     atomic.Int64
	eofGate sync.RWMutex
}

var (
	_ block.Device     = (*File)(nil)
	_ block.ZeroWriter = (*File)(nil)
)

// Open opens path as a File.
func Open(path string, o Options) (*File, error) {
	if o.Entries <= 0 {
		o.Entries = defaultEntries
	}
	o.Entries = min(o.Entries, maxEntries)
	if o.Workers <= 0 {
		o.Workers = defaultWorkers
	}
	if o.Perm == 0 {
		o.Perm = 0o644
	}
	flags := unix.O_RDWR | unix.O_CLOEXEC
	if o.ReadOnly {
		flags = unix.O_RDONLY | unix.O_CLOEXEC
	}
	if o.Create && !o.ReadOnly {
		flags |= unix.O_CREAT
	}
	op := "open"
	if o.Direct {
		flags |= unix.O_DIRECT
		op = "open O_DIRECT"
	}
	fd, err := openRetry(path, flags, uint32(o.Perm))
	if err != nil {
		return nil, &os.PathError{Op: op, Path: path, Err: err}
	}
	f := &File{path: path, fd: fd, readOnly: o.ReadOnly, direct: o.Direct,
		align: 1, memAlign: 1, done: make(chan struct{}), sysFall: o.SyscallFallocate, hybrid: o.Hybrid}
	fail := func(err error) (*File, error) {
		unix.Close(fd)
		return nil, err
	}
	if o.Direct {
		f.align, f.memAlign = probeAlign(fd)
		size := int(max(bounceSize/f.align, 1) * f.align)
		al := max(f.memAlign, block.DefaultMemAlign)
		f.bounce.New = func() any {
			b := &bounceBuf{b: block.AlignedBuf(size, al)}
			return b
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail(&os.PathError{Op: "fstat", Path: path, Err: err})
	}
	f.zeroAlign = probeZeroAlign(fd, &st, f.align)
	f.eof.Store(st.Size)
	f.media, f.mediaWhy, f.metered = detectMedia(fd)
	f.allocOK.Store(true)
	f.zeroOK.Store(true)
	f.punchOK.Store(true)

	f.backend = Threads
	if o.Backend != Threads {
		p := ProbeRing()
		err = p.Err
		if testNoRing != nil {
			err = testNoRing
		}
		if err == nil {
			f.ring, err = newRing(o.Entries, &f.m)
		}
		if err == nil {
			f.ring.merge = !o.NoMerge
		}
		if err == nil {
			f.backend = Ring
			f.fallocK = p.Has(iosys.IORING_OP_FALLOCATE)
		} else if o.Backend == Ring {
			return fail(fmt.Errorf("uring: io_uring unavailable: %w", err))
		} else {
			f.reason = "io_uring unavailable: " + err.Error()
		}
	}
	if f.backend == Threads {
		f.sem = make(chan struct{}, o.Workers)
		if f.reason == "" {
			f.reason = "requested"
		}
	}
	return f, nil
}

// testNoRing, when set by a test, makes Open behave as if io_uring were
// unavailable for that reason.
var testNoRing error

// Opener returns an opener for backing files with the given options
// (ReadOnly and Create are taken from the call).
func Opener(o Options) func(path string, readOnly bool) (block.Device, error) {
	return func(path string, readOnly bool) (block.Device, error) {
		o := o
		o.ReadOnly = readOnly
		o.Create = false
		f, err := Open(path, o)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
}

func openRetry(path string, flags int, perm uint32) (int, error) {
	for {
		fd, err := unix.Open(path, flags, perm)
		if err != unix.EINTR {
			return fd, err
		}
	}
}

// probeAlign finds the O_DIRECT offset/length and memory alignment.
func probeAlign(fd int) (int64, int) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && n > 0 {
			return int64(n), n
		}
	}
	var sx unix.Statx_t
	if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &sx) == nil &&
		sx.Mask&unix.STATX_DIOALIGN != 0 && sx.Dio_offset_align > 0 {
		mem := int(sx.Dio_mem_align)
		if mem < 1 {
			mem = 1
		}
		return int64(sx.Dio_offset_align), mem
	}
	return block.DefaultMemAlign, block.DefaultMemAlign
}

// maxZeroAlign caps the zeroing alignment taken from st_blksize/f_bsize:
// network filesystems report their transfer size there (1 MiB and more),
// which is no allocation unit.
const maxZeroAlign = 64 << 10

// probeZeroAlign finds the alignment fallocate zeroing needs to stay off
// the page cache (F2): the filesystem block (the larger of st_blksize and
// statfs f_bsize, powers of two up to maxZeroAlign), or the logical
// sector size of a block device; never less than align.
func probeZeroAlign(fd int, st *unix.Stat_t, align int64) int64 {
	a := max(align, 1)
	if st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && n > 0 && n&(n-1) == 0 {
			a = max(a, int64(n))
		}
		return a
	}
	cand := [2]int64{int64(st.Blksize)}
	var sfs unix.Statfs_t
	if unix.Fstatfs(fd, &sfs) == nil {
		cand[1] = int64(sfs.Bsize)
	}
	for _, c := range cand {
		if c > 1 && c&(c-1) == 0 {
			a = max(a, min(c, maxZeroAlign))
		}
	}
	return a
}

// Backend reports the backend actually in use.
func (f *File) Backend() Backend { return f.backend }

// BackendReason says why that backend is in use ("requested", or why
// io_uring was unavailable).
func (f *File) BackendReason() string {
	if f.backend == Ring {
		return "io_uring"
	}
	return f.reason
}

// Media reports what stores the file (Caps().Media) and how that was
// found, e.g. "zram1" or "vda non-rotational".
func (f *File) Media() (block.Media, string) { return f.media, f.mediaWhy }

// Metrics returns a snapshot of the File's counters.
func (f *File) Metrics() Metrics { return f.m.snapshot() }

// Fd returns the descriptor data requests use (O_DIRECT when Direct).
func (f *File) Fd() int { return f.fd }

// Caps implements block.Device.
func (f *File) Caps() block.Caps {
	c := block.Caps{ZeroFlags: block.MayUnmap, Align: f.align, MemAlign: f.memAlign, ZeroAlign: f.zeroAlign,
		Media: f.media, Metered: f.metered}
	if f.allocOK.Load() {
		c.ZeroFlags |= block.Allocate
	}
	return c
}

func (f *File) enter() error {
	f.life.RLock()
	if f.closed.Load() {
		f.life.RUnlock()
		return block.ErrClosed
	}
	return nil
}

// Close implements block.Device: it waits for requests in flight (they
// finish normally), makes waiters for a ring slot fail with os.ErrClosed,
// then releases the ring and the descriptors.
func (f *File) Close() error {
	if !f.closed.CompareAndSwap(false, true) {
		return block.ErrClosed
	}
	close(f.done)
	f.life.Lock()
	defer f.life.Unlock()
	var errs []error
	if f.ring != nil {
		errs = append(errs, f.ring.close())
	}
	errs = append(errs, unix.Close(f.fd))
	return errors.Join(errs...)
}

// Readv implements block.Device.
func (f *File) Readv(off int64, bufs [][]byte) error {
	total := block.VecLen(bufs)
	if err := block.CheckRange(off, total); err != nil {
		return err
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	if total == 0 {
		return nil
	}
	if f.direct && !f.fast(off, total, bufs) {
		// Misaligned on O_DIRECT: the padded range through a bounce
		// buffer (F1). No lock: a read overlapping a write in flight may
		// see old or new data per aligned block (B1).
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
	if err := block.CheckRange(off, total); err != nil {
		return err
	}
	if f.readOnly {
		return block.ErrReadOnly
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	return f.writev(off, bufs, total)
}

// writev writes under the EOF gate (F3): writes ending past the known EOF
// hold it shared so that extending fallocates (exclusive) never overlap
// them. On a Direct file it also holds wmu (F1): shared for a write with
// aligned offset and length (bounced if its buffers are not aligned),
// exclusively for a read-modify-write.
func (f *File) writev(off int64, bufs [][]byte, total int64) error {
	if total == 0 {
		return nil
	}
	end := off + total
	if end > f.eof.Load() {
		f.eofGate.RLock()
		defer f.eofGate.RUnlock()
	}
	var err error
	switch {
	case !f.direct:
		err = f.chunked(true, off, bufs)
	case f.fast(off, total, bufs):
		f.wmu.RLock()
		err = f.chunked(true, off, bufs)
		f.wmu.RUnlock()
	case block.Aligned(off, total, f.align):
		f.m.misaligned.Add(1)
		f.wmu.RLock()
		err = f.bounceWrite(off, bufs, total)
		f.wmu.RUnlock()
	default:
		f.m.misaligned.Add(1)
		f.m.rmw.Add(1)
		f.wmu.Lock()
		err = f.rmwWrite(off, bufs, total)
		f.wmu.Unlock()
	}
	if err != nil {
		return err
	}
	f.bumpEOF(end)
	return nil
}

func (f *File) bumpEOF(end int64) {
	for {
		cur := f.eof.Load()
		if end <= cur || f.eof.CompareAndSwap(cur, end) {
			return
		}
	}
}

// chunked splits vectors longer than IOV_MAX.
func (f *File) chunked(write bool, off int64, bufs [][]byte) error {
	for len(bufs) > maxIov {
		c := bufs[:maxIov]
		if err := f.xfer(write, off, c, block.VecLen(c)); err != nil {
			return err
		}
		off += block.VecLen(c)
		bufs = bufs[maxIov:]
	}
	return f.xfer(write, off, bufs, block.VecLen(bufs))
}

func opName(write bool) string {
	if write {
		return "write"
	}
	return "read"
}

// xfer moves total bytes, resubmitting after short transfers and filling
// zeros on reads past EOF (B2). On a Direct file the request is aligned
// (f.fast); the caller holds wmu for writes.
func (f *File) xfer(write bool, off int64, bufs [][]byte, total int64) error {
	if total == 0 {
		return nil
	}
	fd := f.fd
	alone := false
	if f.hybrid {
		// Alone: no other data request in progress, so nothing to batch
		// with; a plain syscall has lower latency than the ring.
		alone = f.active.Add(1) == 1
		defer f.active.Add(-1)
	}
	for {
		var n int
		var err error
		if f.ring != nil && !alone {
			var res int32
			if len(bufs) == 1 && len(bufs[0]) > maxRW {
				var v [1][]byte
				v[0] = bufs[0][:maxRW]
				res, err = f.ring.rw(write, fd, off, v[:], f.done)
			} else {
				res, err = f.ring.rw(write, fd, off, bufs, f.done)
			}
			if err == nil && res < 0 {
				err = unix.Errno(-res)
			}
			n = int(res)
		} else {
			n, err = f.sysRW(write, fd, off, bufs)
		}
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
					clear(b) // past EOF reads as zeros (B2)
				}
				return nil
			}
			return &block.OpError{Op: "write", Off: off, Len: total, Err: unix.ENOSPC}
		}
		f.m.short.Add(1)
		if f.direct && int64(n)%f.align != 0 {
			if !write {
				// O_DIRECT reads stop at an unaligned offset only at
				// the end of the file: the rest reads as zeros (B2).
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

// sysRW is one pread/pwrite/preadv/pwritev, retried on EINTR/EAGAIN.
func (f *File) sysRW(write bool, fd int, off int64, bufs [][]byte) (int, error) {
	if f.sem != nil {
		f.sem <- struct{}{}
		defer func() { <-f.sem }()
	}
	for {
		var n int
		var err error
		switch {
		case len(bufs) == 1 && write:
			n, err = unix.Pwrite(fd, bufs[0], off)
		case len(bufs) == 1:
			n, err = unix.Pread(fd, bufs[0], off)
		case write:
			n, err = unix.Pwritev(fd, bufs, off)
		default:
			n, err = unix.Preadv(fd, bufs, off)
		}
		if err == unix.EINTR || err == unix.EAGAIN {
			f.m.eagain.Add(1)
			continue
		}
		return n, err
	}
}

// fallocate runs fallocate(mode) on the ring (or as a syscall). On a
// Direct file it holds wmu shared: a read-modify-write must not rewrite
// zeroed bytes with what it read before (F1).
func (f *File) fallocate(mode uint32, off, n int64) error {
	f.m.fallocates.Add(1)
	if f.direct {
		f.wmu.RLock()
		defer f.wmu.RUnlock()
	}
	if f.ring != nil && f.fallocK && !f.sysFall {
		res, err := f.ring.simple(fallocSQE(f.fd, mode, off, n), f.done)
		if err != nil {
			return err
		}
		if res < 0 {
			return unix.Errno(-res)
		}
		return nil
	}
	if f.sem != nil {
		f.sem <- struct{}{}
		defer func() { <-f.sem }()
	}
	for {
		err := unix.Fallocate(f.fd, mode, off, n)
		if err != unix.EINTR {
			return err
		}
	}
}

// refused reports whether a fallocate error means "this mode is not
// supported here" (QEMU's translate_err plus EINVAL, e.g. tmpfs ZERO_RANGE).
func refused(err error) bool {
	return err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS ||
		err == unix.ENOTTY || err == unix.ENODEV
}

func checkZeroFlags(flags block.Flags) error {
	if flags&^(block.Allocate|block.MayUnmap) != 0 {
		// Serialising/NoWait: the engine serialises itself (ReqFlags == 0).
		return block.ErrNotSupported
	}
	return nil
}

// WriteZeroes implements block.Device (B3, B4).
func (f *File) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if err := checkZeroFlags(flags); err != nil {
		return err
	}
	if f.readOnly {
		return block.ErrReadOnly
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	if n == 0 {
		return nil
	}
	if flags&block.Allocate != 0 {
		return f.allocZero(off, n)
	}
	return f.writeZeroes(off, n, flags)
}

// allocZero is WriteZeroes with Allocate: fallocate(ZERO_RANGE) or
// ErrNotSupported with nothing written. The range must cover whole
// filesystem blocks (F2): a partial block is zeroed through the page cache.
func (f *File) allocZero(off, n int64) error {
	if !f.allocOK.Load() || !block.Aligned(off, n, f.zeroAlign) {
		return block.ErrNotSupported
	}
	held := f.lockEOF(off + n)
	err := f.fallocate(unix.FALLOC_FL_ZERO_RANGE, off, n)
	if err == nil {
		f.bumpEOF(off + n)
	}
	f.unlockEOF(held)
	return f.zeroErr(err, off, n)
}

func (f *File) zeroErr(err error, off, n int64) error {
	switch {
	case err == nil:
		return nil
	case err == block.ErrClosed:
		return err
	case refused(err):
		f.allocOK.Store(false)
		return fmt.Errorf("uring: fallocate(ZERO_RANGE) refused: %w (%w)", block.ErrNotSupported, err)
	}
	return &block.OpError{Op: "write_zeroes", Off: off, Len: n, Err: err}
}

// lockEOF takes the EOF gate exclusively if [.., end) extends the file
// and reports whether it did; pass the result to unlockEOF.
func (f *File) lockEOF(end int64) bool {
	if end > f.eof.Load() {
		f.eofGate.Lock()
		return true
	}
	return false
}

func (f *File) unlockEOF(held bool) {
	if held {
		f.eofGate.Unlock()
	}
}

// writeZeroes is WriteZeroes without Allocate: PUNCH_HOLE|KEEP_SIZE (with
// MayUnmap, inside EOF), else ZERO_RANGE, else zero buffers. PUNCH_HOLE
// and ZERO_RANGE are never combined in one call. On a Direct file only
// whole filesystem blocks are fallocated; partial ones at the edges get
// zero buffers (F2): the filesystem would zero them in the page cache.
func (f *File) writeZeroes(off, n int64, flags block.Flags) error {
	if f.direct && !block.Aligned(off, n, f.zeroAlign) {
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
		err := f.fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
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
		held := f.lockEOF(off + n)
		err := f.fallocate(unix.FALLOC_FL_ZERO_RANGE, off, n)
		if err == nil {
			f.bumpEOF(off + n)
		}
		f.unlockEOF(held)
		if err == nil || err == block.ErrClosed {
			return err
		}
		if err == unix.EOPNOTSUPP {
			f.zeroOK.Store(false)
		}
	}
	return f.zeroBufs(off, n)
}

// zeroBufs writes n zero bytes at off; not via block.WriteZeroBuffers,
// which would re-enter Writev and take f.life recursively.
func (f *File) zeroBufs(off, n int64) error {
	z := block.ZeroBuf()
	var v [16][]byte
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

// ZeroThenWritev implements block.ZeroWriter. With Allocate on the ring the
// fallocate and the write are one linked submission (IOSQE_IO_LINK);
// otherwise they run one after the other.
func (f *File) ZeroThenWritev(zoff, zn int64, zflags block.Flags, woff int64, bufs [][]byte) error {
	total := block.VecLen(bufs)
	if err := block.CheckRange(zoff, zn); err != nil {
		return err
	}
	if err := block.CheckRange(woff, total); err != nil {
		return err
	}
	if err := checkZeroFlags(zflags); err != nil {
		return err
	}
	if f.readOnly {
		return block.ErrReadOnly
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
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
	fast := f.ring != nil && f.fallocK && total > 0 && len(bufs) <= maxIov &&
		(!f.direct || f.fast(woff, total, bufs)) &&
		(len(bufs) != 1 || total <= maxRW)
	if !fast {
		if err := f.allocZero(zoff, zn); err != nil {
			return err
		}
		return f.writev(woff, bufs, total)
	}
	// Gate: exclusive if the fallocate extends the file, shared if only
	// the write does.
	zend, wend := zoff+zn, woff+total
	eof := f.eof.Load()
	switch {
	case zend > eof:
		f.eofGate.Lock()
		defer f.eofGate.Unlock()
	case wend > eof:
		f.eofGate.RLock()
		defer f.eofGate.RUnlock()
	}
	if f.direct {
		// Both SQEs modify the file: no read-modify-write meanwhile (F1).
		f.wmu.RLock()
		defer f.wmu.RUnlock()
	}
	f.m.fallocates.Add(1)
	zres, wres, err := f.ring.linked(f.fd, unix.FALLOC_FL_ZERO_RANGE, zoff, zn, woff, bufs, f.done)
	if err != nil {
		return err
	}
	if zres < 0 {
		// The linked write was cancelled (-ECANCELED): nothing written.
		return f.zeroErr(unix.Errno(-zres), zoff, zn)
	}
	f.bumpEOF(zend)
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
	f.bumpEOF(wend)
	return nil
}

// Flush implements block.Device: fdatasync (IORING_FSYNC_DATASYNC).
func (f *File) Flush() error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	if f.readOnly {
		return nil
	}
	f.m.fsyncs.Add(1)
	var err error
	if f.ring != nil {
		e := sqe{op: iosys.IORING_OP_FSYNC, fd: int32(f.fd), opFlag: iosys.IORING_FSYNC_DATASYNC}
		var res int32
		res, err = f.ring.simple(e, f.done)
		if err == nil && res < 0 {
			err = unix.Errno(-res)
		}
	} else {
		for {
			err = unix.Fdatasync(f.fd)
			if err != unix.EINTR {
				break
			}
		}
	}
	if err != nil && err != block.ErrClosed {
		return &block.OpError{Op: "flush", Err: err}
	}
	return err
}

// Size implements block.Device.
func (f *File) Size() (int64, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.life.RUnlock()
	if f.direct {
		// Not while a read-modify-write has the file padded past its
		// end (F1).
		f.wmu.RLock()
		defer f.wmu.RUnlock()
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, &block.OpError{Op: "size", Err: err}
	}
	return st.Size, nil
}

// Truncate implements block.Device. It holds the EOF gate exclusively: the
// size may shrink, which is the only time eof decreases. On a Direct file
// it also holds wmu exclusively (F1): ftruncate to a size inside a
// filesystem block zeroes the rest of that block in the page cache, which
// must not race a direct write to the same block.
func (f *File) Truncate(size int64) error {
	if size < 0 {
		return block.ErrRange
	}
	if f.readOnly {
		return block.ErrReadOnly
	}
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	f.eofGate.Lock()
	defer f.eofGate.Unlock()
	if f.direct {
		f.wmu.Lock()
		defer f.wmu.Unlock()
	}
	if err := unix.Ftruncate(f.fd, size); err != nil {
		return &block.OpError{Op: "truncate", Off: size, Err: err}
	}
	f.eof.Store(size)
	return nil
}
