//go:build linux

package uring

import "golang.org/x/sys/unix"

// ringIO is the io_uring backend (Backend Ring): every request takes a
// slot on the ring (ring.go; doc.go lists the ring's files).
type ringIO struct {
	r    *ring
	fd   int
	done <-chan struct{} // closed by File.Close: aborts a wait for a slot (U5)
	// fallocOnRing: IORING_OP_FALLOCATE exists and Options.SyscallFallocate
	// is off; otherwise standalone fallocates go to sync (U8).
	fallocOnRing bool
	sync         syncIO // without a bound on concurrent calls
}

var (
	_ backend = (*ringIO)(nil)
	_ linker  = (*ringIO)(nil)
)

func (b *ringIO) rw(write bool, off int64, bufs [][]byte) (int, error) {
	var res int32
	var err error
	if len(bufs) == 1 && len(bufs[0]) > maxRW {
		// At most maxRW at once: File resubmits the rest as a short
		// transfer (R6).
		var v [1][]byte
		v[0] = bufs[0][:maxRW]
		res, err = b.r.rw(write, b.fd, off, v[:], b.done)
	} else {
		res, err = b.r.rw(write, b.fd, off, bufs, b.done)
	}
	return result(res, err)
}

func (b *ringIO) fallocate(mode uint32, off, n int64) error {
	if !b.fallocOnRing {
		return b.sync.fallocate(mode, off, n)
	}
	_, err := result(b.r.simple(fallocSQE(b.fd, mode, off, n), b.done))
	return err
}

func (b *ringIO) fdatasync() error {
	_, err := result(b.r.simple(fsyncSQE(b.fd), b.done))
	return err
}

func (b *ringIO) linked(mode uint32, zoff, zn, woff int64, bufs [][]byte) (zres, wres int32, err error) {
	return b.r.linked(b.fd, mode, zoff, zn, woff, bufs, b.done)
}

func (b *ringIO) close() error { return b.r.close() }

// result turns a completion into rw's result: bytes, or the errno.
func result(res int32, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	if res < 0 {
		return 0, unix.Errno(-res)
	}
	return int(res), nil
}
