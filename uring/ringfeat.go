//go:build linux

package uring

import (
	"fmt"
	"strings"
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"github.com/qring/qring/block"
	"golang.org/x/sys/unix"
)

// Optional ring features (R9): each one saves kernel work per request
// and each is taken only when the kernel accepts it; a refusal leaves the
// ring exactly as it was without it, never an error.
//
//   - coop-taskrun (IORING_SETUP_COOP_TASKRUN, Linux 5.19): a
//     completion's task work is queued to the thread that submitted the
//     SQE without an inter-processor interrupt. A submitting thread that
//     sleeps (a parked Go thread in futex, the leader waiting in its
//     enter, R2) is still woken to run it; one running Go code in user
//     space runs it on its next entry into the kernel (a syscall, the
//     timer tick, the Go runtime's preemption signal), so a completion
//     can be late by at most that, never lost.
//   - fixed-file (IORING_REGISTER_FILES): the descriptor is registered
//     once and SQEs name it by index (IOSQE_FIXED_FILE), so the kernel
//     does not look the file up and take a reference per request.
//     close unregisters it first: a registration holds a reference to
//     the open file, and the file's locks must be gone when Close
//     returns (an image is reopened, or qemu-img takes its lock, right
//     after).
//   - fixed-zeros (IORING_REGISTER_BUFFERS): block.ZeroBuf, the shared
//     read-only zero buffer the zero fill and the zero-buffer fallbacks
//     write from, is registered once, and a write of a single buffer
//     inside it becomes IORING_OP_WRITE_FIXED: its pages are pinned once
//     instead of per request (get_user_pages on every O_DIRECT write).
//     Caller buffers are never registered: they change every request.
//     Registered memory counts against RLIMIT_MEMLOCK for a user without
//     CAP_IPC_LOCK, so only writable Files register it (a read-only
//     File, e.g. each backing file of a chain, never writes zeros), and
//     a refusal (the limit reached) only leaves the feature off.
//
// See io_uring_setup(2) and io_uring_register(2):
// https://man7.org/linux/man-pages/man2/io_uring_setup.2.html
// https://man7.org/linux/man-pages/man2/io_uring_register.2.html
type ringFeat struct {
	coop       bool
	fixedFile  bool
	fixedFd    int32  // the registered descriptor (index 0)
	zeroBase   uint64 // the registered zero buffer (index 0), or 0
	zeroLen    uint64
	registered bool // files registered: unregister before closing
}

// testNoFeat, when set by a test, makes new rings take none of the
// optional features (to compare against the plain ring).
var testNoFeat bool

// setupFlags are the optional io_uring_setup flags to try first.
// SINGLE_ISSUER with DEFER_TASKRUN is not among them: it refuses enters
// from all threads but one, so every goroutine that enters a ring would
// have to be locked to its thread (a queue's owner is the caller's), and
// locking them cost far more than deferring task work saved
// (perf/results/2026-11-30-defer-taskrun).
func setupFlags() uint32 {
	if testNoFeat {
		return 0
	}
	return iosys.IORING_SETUP_COOP_TASKRUN
}

// register registers fd and the shared zero buffer on r, keeping
// whatever the kernel accepts (R9).
func (r *ring) register(fd int, writable bool) {
	if testNoFeat {
		return
	}
	fds := [1]int32{int32(fd)}
	if iosys.IOURingRegister(r.fd, iosys.IORING_REGISTER_FILES, unsafe.Pointer(&fds[0]), 1) == nil {
		r.feat.fixedFile, r.feat.fixedFd, r.feat.registered = true, int32(fd), true
	}
	if !writable {
		return
	}
	z := block.ZeroBuf()
	var iov [1]unix.Iovec
	iov[0].Base = unsafe.SliceData(z)
	iov[0].SetLen(len(z))
	if iosys.IOURingRegister(r.fd, iosys.IORING_REGISTER_BUFFERS, unsafe.Pointer(&iov[0]), 1) == nil {
		r.feat.zeroBase, r.feat.zeroLen = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(z)))), uint64(len(z))
	}
}

// unregister drops the file registration (see fixed-file above); the
// buffer registration goes with the ring. An error is Close's: the ring's
// teardown would then release the file (and its locks) only later.
func (r *ring) unregister() error {
	if !r.feat.registered {
		return nil
	}
	r.feat.registered = false
	if err := iosys.IOURingRegister(r.fd, iosys.IORING_UNREGISTER_FILES, nil, 0); err != nil {
		return fmt.Errorf("uring: unregister the file: %w", err)
	}
	return nil
}

// applyFeat rewrites e for the registered file and zero buffer (R9).
// It returns the buffer index to set, or -1.
func (r *ring) applyFeat(e *sqe) int {
	buf := -1
	if r.feat.zeroLen != 0 && e.op == iosys.IORING_OP_WRITE &&
		e.addr >= r.feat.zeroBase && e.addr+uint64(e.len) <= r.feat.zeroBase+r.feat.zeroLen {
		e.op = iosys.IORING_OP_WRITE_FIXED
		buf = 0
	}
	if r.feat.fixedFile && e.fd == r.feat.fixedFd {
		e.fd = 0
		e.flags |= iosys.IOSQE_FLAGS_FIXED_FILE
	}
	return buf
}

// String lists the features the ring has, e.g. "coop-taskrun,fixed-file".
func (f ringFeat) String() string {
	var s []string
	if f.coop {
		s = append(s, "coop-taskrun")
	}
	if f.fixedFile {
		s = append(s, "fixed-file")
	}
	if f.zeroLen != 0 {
		s = append(s, "fixed-zeros")
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// RingFeatures names the optional ring features this File's ring has
// (R9), or "" when it has no ring.
func (f *File) RingFeatures() string {
	switch b := f.io.(type) {
	case *ringIO:
		return b.r.feat.String()
	case *hybrid:
		return b.r.feat.String()
	}
	return ""
}
