//go:build linux

package uring

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// File is a block.Device over one host file. It holds every rule of the
// device (doc.go) and hands each request to its backend: the ring, plain
// syscalls, or both (backend.go). Data requests are rw.go's, zeroing
// zero.go's, the linked zero-then-write linked.go's, misaligned O_DIRECT
// requests bounce.go's; Open is in open.go.
type File struct {
	path      string
	fd        int // O_DIRECT when direct; the only descriptor (U1)
	readOnly  bool
	noFlush   bool // Options.NoFlush
	direct    bool
	align     int64
	memAlign  int
	zeroAlign int64        // Allocate zeroing alignment: filesystem block (U2)
	blockDev  bool         // a block device, of devSize bytes (U15)
	devSize   atomic.Int64 // as last found: a device may grow (U15)

	// wmu orders writes on a Direct file against read-modify-writes (U1):
	// every request that modifies the file (write, fallocate) holds it
	// shared, a misaligned write and Truncate hold it exclusively.
	wmu sync.RWMutex
	// padMu is held exclusively by a read-modify-write (under wmu) while
	// its padding may hold the file past its size, and shared by Size
	// and DataRun, which must not see that size (U1). Not wmu: a queue's
	// owner may ask them while its writes hold wmu shared and a
	// read-modify-write waits for those (U10, block A3).
	padMu  sync.RWMutex
	bounce sync.Pool // *bounceBuf, for misaligned requests on a Direct file

	media    block.Media // what stores the file (U9)
	mediaWhy string
	metered  bool // writes throttled by cgroup (U9)

	io      backend // where requests go (backend.go)
	link    linker  // the linked fallocate+write (U4); nil without it
	backend Backend
	reason  string

	m counters

	life   sync.RWMutex // held shared by every request, exclusively by Close
	closed atomic.Bool
	done   chan struct{} // closed by Close: aborts waits for a slot

	allocOK atomic.Bool // Allocate zeroing works: ZERO_RANGE not refused (a block device: WRITE_ZEROES, U15)
	zeroOK  atomic.Bool // same, for WriteZeroes without Allocate
	punchOK atomic.Bool // PUNCH_HOLE|KEEP_SIZE has not been refused
	// allocDone: an Allocate zeroing succeeded on this File, so the
	// linked ZeroThenWritev may be used: the kernel does not cancel the
	// write after a refused fallocate (U4).
	allocDone atomic.Bool

	// Allocate zeroing mode (U2): wzOK while FALLOC_FL_WRITE_ZEROES is
	// believed to work (set at Open, cleared for good by a refusal);
	// wzWhy says why it is or is not (Zeroing).
	wzOK  atomic.Bool
	wzWhy atomic.Pointer[string]

	// eof is a lower bound of the file size (U3 in doc.go); eofGate
	// serialises size-extending zeroing against writes past eof.
	eof     atomic.Int64
	eofGate sync.RWMutex
	// testEOFLooked, set by tests before any request, runs when a
	// request found itself inside eof and takes no gate: a test's
	// Truncate there lands in the window lockWMU closes (U3).
	testEOFLooked func()

	// lostFlush is the first failed fdatasync's error (U14): once set,
	// every flush fails. flushMu serialises fdatasync calls, so that a
	// flush waiting for another sees its failure.
	lostFlush atomic.Pointer[error]
	flushMu   sync.Mutex

	// locks are the image locks held (lock.go).
	locks block.FDLocks
}

var (
	_ block.Device     = (*File)(nil)
	_ block.ZeroWriter = (*File)(nil)
)

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
		Media: f.media, Metered: f.metered, MergesWrites: f.mergesWrites(), Fixed: f.blockDev}
	if f.allocOK.Load() {
		c.ZeroFlags |= block.Allocate
		c.AllocWritten = f.wzOK.Load() // block B9
	}
	return c
}

// Zeroing says how WriteZeroes with Allocate zeroes (U2), for tools to
// print: "write-zeroes (why it is believed to work)", "zero-range
// (write-zeroes ...: why not)", or "none (zero-range refused)".
func (f *File) Zeroing() string {
	why := ""
	if p := f.wzWhy.Load(); p != nil {
		why = *p
	}
	switch {
	case !f.allocOK.Load() && f.blockDev:
		// U15: ZERO_RANGE on a block device may write zero pages.
		return "none (block device without write-zeroes: " + why + ")"
	case !f.allocOK.Load():
		return "none (zero-range refused)"
	case f.wzOK.Load():
		return "write-zeroes (" + why + ")"
	}
	return "zero-range (write-zeroes " + why + ")"
}

// enter admits a request unless the File is closed (U5); the request
// leaves with f.life.RUnlock.
func (f *File) enter() error {
	f.life.RLock()
	if f.closed.Load() {
		f.life.RUnlock()
		return block.ErrClosed
	}
	return nil
}

// enterWrite enters the File like enter and checks a request that
// modifies [off, off+n), with zeroing flags zflags (0 for a plain write).
// Entered first: a closed File says only os.ErrClosed (block B7), and
// checkDevice must not lseek a descriptor Close gave back (U5).
func (f *File) enterWrite(off, n int64, zflags block.Flags) error {
	if err := f.enter(); err != nil {
		return err
	}
	if err := f.checkWrite(off, n, zflags); err != nil {
		f.life.RUnlock()
		return err
	}
	return nil
}

// checkWrite is enterWrite's check, without entering.
func (f *File) checkWrite(off, n int64, zflags block.Flags) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if err := checkZeroFlags(zflags); err != nil {
		return err
	}
	if f.readOnly {
		return block.ErrReadOnly
	}
	op := "write"
	if zflags != 0 {
		op = "write_zeroes"
	}
	return f.checkDevice(op, off, n)
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
	return errors.Join(f.io.close(), unix.Close(f.fd))
}

// Size implements block.Device.
func (f *File) Size() (int64, error) {
	if err := f.enter(); err != nil {
		return 0, err
	}
	defer f.life.RUnlock()
	if f.direct {
		// Not while a read-modify-write has the file padded past its
		// end (U1).
		f.padMu.RLock()
		defer f.padMu.RUnlock()
	}
	n, err := f.fileSize()
	if err != nil {
		return 0, &block.OpError{Op: "size", Err: err}
	}
	return n, nil
}

// Truncate implements block.Device. It holds the EOF gate exclusively: the
// size may shrink, which is the only time eof decreases. On a Direct file
// it also holds wmu exclusively (U1): ftruncate to a size inside a
// filesystem block zeroes the rest of that block in the page cache, which
// must not race a direct write to the same block.
func (f *File) Truncate(size int64) error {
	if err := f.enter(); err != nil {
		return err
	}
	defer f.life.RUnlock()
	if size < 0 {
		return block.ErrRange
	}
	if f.readOnly {
		return block.ErrReadOnly
	}
	f.eofGate.Lock()
	defer f.eofGate.Unlock()
	if f.direct {
		f.wmu.Lock()
		defer f.wmu.Unlock()
	}
	if f.blockDev {
		return f.truncateDevice(size) // U15
	}
	if err := unix.Ftruncate(f.fd, size); err != nil {
		return &block.OpError{Op: "truncate", Off: size, Err: err}
	}
	f.eof.Store(size)
	return nil
}
