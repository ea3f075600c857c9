//go:build linux

package uring

import (
	"runtime"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// One request on the ring, from taking a slot to its result: a data
// request (rw), a single non-data SQE (simple), or a fallocate linked to
// a write (linked, U4). Each retries -EAGAIN/-EINTR completions (R6).

// again reports whether a completion asks for a resubmission (R6).
func again(res int32) bool { return res == -int32(unix.EAGAIN) || res == -int32(unix.EINTR) }

// rw runs one readv/writev (or read/write for one buffer) of bufs at off
// and returns the kernel's result (bytes, or -errno). len(bufs) <= maxIov.
func (r *ring) rw(write bool, fd int, off int64, bufs [][]byte, done <-chan struct{}) (int32, error) {
	idx, err := r.getSlot(done)
	if err != nil {
		return 0, err
	}
	s := &r.slots[idx]
	s.iov = setIov(s.iov, bufs)
	d := span{write: write, off: off}
	for _, b := range bufs {
		d.n += int64(len(b))
	}
	res, err := r.one(idx, rwSQE(write, fd, off, s.iov), &d)
	runtime.KeepAlive(bufs)
	return res, err
}

// simple runs one non-data SQE (fallocate, fsync) and returns its result.
// It counts in r.slow meanwhile (R2).
func (r *ring) simple(e sqe, done <-chan struct{}) (int32, error) {
	idx, err := r.getSlot(done)
	if err != nil {
		return 0, err
	}
	r.slow.Add(1)
	defer r.slow.Add(-1)
	return r.one(idx, e, nil)
}

// span is a data request as merging sees it (R8): its kind and range.
type span struct {
	write  bool
	off, n int64
}

// one runs the single SQE e of slot idx until its result needs no
// resubmission (R6), then frees the slot. A data SQE (d != nil) is
// queued through queueRW, so it may merge (R8).
func (r *ring) one(idx uint32, e sqe, d *span) (int32, error) {
	es := [1]sqe{e}
	for {
		if d != nil {
			r.queueRW(idx, e, d.write, d.off, d.n)
			if r.testQueued != nil {
				r.testQueued()
			}
		} else {
			r.queue(idx, 0, es[:])
		}
		if err := r.wait(idx, 1); err != nil {
			return 0, err
		}
		if res := r.slots[idx].res[0].Load(); !again(res) {
			r.putSlot(idx)
			return res, nil
		}
		r.m.eagain.Add(1)
	}
}

// linked submits fallocate(mode, zoff, zn) linked (IOSQE_IO_LINK) before a
// write of bufs at woff, in one submission; the kernel starts the write only
// after the fallocate completed, and does not cancel it when the fallocate
// failed (IORING_OP_FALLOCATE does not fail its link: U4).
// It returns both results; the write result is retried here on EAGAIN.
func (r *ring) linked(fd int, mode uint32, zoff, zn int64, woff int64, bufs [][]byte, done <-chan struct{}) (zres, wres int32, err error) {
	idx, err := r.getSlot(done)
	if err != nil {
		return 0, 0, err
	}
	s := &r.slots[idx]
	s.iov2 = setIov(s.iov2, bufs)
	var e [2]sqe
	e[0] = fallocSQE(fd, mode, zoff, zn)
	e[0].flags = iosys.IOSQE_FLAGS_IO_LINK
	e[1] = rwSQE(true, fd, woff, s.iov2)
	if err := r.run(idx, 0, e[:]); err != nil {
		return 0, 0, err
	}
	zres, wres = s.res[0].Load(), s.res[1].Load()
	if again(zres) {
		// Retry the whole chain (the write may have run: the same
		// bytes again, after the zeroing).
		r.m.eagain.Add(1)
		if err := r.run(idx, 0, e[:]); err != nil {
			return 0, 0, err
		}
		zres, wres = s.res[0].Load(), s.res[1].Load()
	}
	for zres >= 0 && again(wres) {
		r.m.eagain.Add(1)
		// Resubmit the write alone as the slot's second SQE so its CQE
		// still lands in res[1].
		if err := r.run(idx, 1, e[1:]); err != nil {
			return 0, 0, err
		}
		wres = s.res[1].Load()
	}
	runtime.KeepAlive(bufs)
	r.putSlot(idx)
	return zres, wres, nil
}

// run queues the SQEs e of slot idx (user_data idx*2+first+k) and waits
// for their CQEs.
func (r *ring) run(idx uint32, first uint64, e []sqe) error {
	r.queue(idx, first, e)
	return r.wait(idx, len(e))
}
