//go:build linux

package uring

import "golang.org/x/sys/unix"

// syncIO is the plain-syscall backend (Backend Threads, QEMU's
// aio=threads): pread/preadv/pwrite/pwritev, fallocate(2) and fdatasync
// on the calling goroutine, whose OS threads the Go runtime pools. The
// ring uses one for what it does not submit (U8). block.OSFile is the
// portable sibling the engine falls back to without an opener; it cannot
// serve here (no O_DIRECT-safe short reads, no preadv, no fallocate or
// fdatasync in the standard library), so what the two share, the device
// rules above the syscalls, lives once in File for every backend.
type syncIO struct {
	fd  int
	sem chan struct{} // bounds concurrent syscalls (Options.Workers); nil: no bound
	m   *counters
}

var _ backend = (*syncIO)(nil)

func (s *syncIO) acquire() {
	if s.sem != nil {
		s.sem <- struct{}{}
	}
}

func (s *syncIO) release() {
	if s.sem != nil {
		<-s.sem
	}
}

// rw is one pread/pwrite/preadv/pwritev, retried on EINTR/EAGAIN.
func (s *syncIO) rw(write bool, off int64, bufs [][]byte) (int, error) {
	s.acquire()
	defer s.release()
	for {
		var n int
		var err error
		switch {
		case len(bufs) == 1 && write:
			n, err = unix.Pwrite(s.fd, bufs[0], off)
		case len(bufs) == 1:
			n, err = unix.Pread(s.fd, bufs[0], off)
		case write:
			n, err = unix.Pwritev(s.fd, bufs, off)
		default:
			n, err = unix.Preadv(s.fd, bufs, off)
		}
		if err == unix.EINTR || err == unix.EAGAIN {
			s.m.eagain.Add(1)
			continue
		}
		return n, err
	}
}

// fallocate is fallocate(2), retried on EINTR.
func (s *syncIO) fallocate(mode uint32, off, n int64) error {
	s.acquire()
	defer s.release()
	for {
		err := unix.Fallocate(s.fd, mode, off, n)
		if err != unix.EINTR {
			return err
		}
	}
}

// fdatasync is fdatasync(2), retried on EINTR. It does not count
// against Options.Workers.
func (s *syncIO) fdatasync() error {
	for {
		err := unix.Fdatasync(s.fd)
		if err != unix.EINTR {
			return err
		}
	}
}

func (s *syncIO) close() error { return nil }
