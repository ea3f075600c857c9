//go:build linux

package uring

import "sync/atomic"

// backend is how a File's requests reach the kernel: the ring (ringIO),
// plain syscalls (syncIO), or the ring with a syscall shortcut (hybrid).
// One call is one request to the kernel. Everything above it is File's
// and shared by all backends: range and state checks, the O_DIRECT
// padding and bounces (U1), zeroing strategies (U2), the EOF gate (U3),
// short transfers and reads past EOF (R6), errors (U6). Go cannot see
// through an interface call, so the vectors passed to it escape: File
// never builds one on its stack (zeroVecs), which would allocate (R5).
type backend interface {
	// rw reads or writes bufs at off once: at most maxIov buffers of
	// total length > 0. It returns the bytes moved, which may be fewer
	// than asked (0 at the end of the file for a read), or an error: an
	// errno (unix.Errno), block.ErrClosed if the File closed while the
	// request waited for a ring slot (U5), or why the ring failed.
	rw(write bool, off int64, bufs [][]byte) (int, error)
	// fallocate runs fallocate(2) with mode on [off, off+n).
	fallocate(mode uint32, off, n int64) error
	// fdatasync makes every completed write durable.
	fdatasync() error
	// close releases what the backend holds (not the descriptor: File's).
	// No request is in flight.
	close() error
}

// linker is a backend that runs a fallocate and a write as one linked
// submission (U4): the ring, when it has IORING_OP_FALLOCATE.
type linker interface {
	// linked returns the fallocate's and the write's results (bytes, or
	// -errno); the write may run even if the fallocate failed (U4). len(bufs) <= maxIov and their total <= maxRW (R6).
	linked(mode uint32, zoff, zn, woff int64, bufs [][]byte) (zres, wres int32, err error)
}

// hybrid is the ring with a shortcut (Options.Hybrid, U8): a data request
// that finds no other in progress has nothing to batch with, so it goes
// to a plain syscall on the calling goroutine, which has the lower
// latency; as soon as requests overlap they use the ring. Everything but
// data requests is the ring's.
type hybrid struct {
	*ringIO
	sync   syncIO       // without a bound on concurrent calls
	active atomic.Int32 // data requests in progress
}

var (
	_ backend = (*hybrid)(nil)
	_ linker  = (*hybrid)(nil)
)

func (h *hybrid) rw(write bool, off int64, bufs [][]byte) (int, error) {
	defer h.active.Add(-1)
	if h.active.Add(1) == 1 {
		return h.sync.rw(write, off, bufs)
	}
	return h.ringIO.rw(write, off, bufs)
}
