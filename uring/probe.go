//go:build linux

package uring

import (
	"fmt"
	"sync"
	"unsafe"

	iosys "github.com/iceber/iouring-go/syscall"
	"golang.org/x/sys/unix"
)

// Probe is the result of IORING_REGISTER_PROBE, taken once per process.
type Probe struct {
	// Err is why io_uring cannot be used (nil when it can).
	Err error
	// Features are the IORING_FEAT_* bits io_uring_setup reported.
	Features uint32
	ops      [256]bool
}

// Has reports whether the kernel supports opcode op.
func (p *Probe) Has(op uint8) bool { return p != nil && p.ops[op] }

func (p *Probe) has(op uint8) bool { return p.ops[op] }

var (
	probeOnce sync.Once
	probed    Probe
)

// ProbeRing probes io_uring once (sync.Once) and caches the result: whether
// a ring can be set up at all (io_uring_disabled, seccomp, old kernels) and
// which opcodes are supported.
func ProbeRing() *Probe {
	probeOnce.Do(func() { probed = doProbe() })
	return &probed
}

func probeOps() *Probe { return ProbeRing() }

// ioUringProbe mirrors struct io_uring_probe with room for 256 ops.
type ioUringProbe struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
	ops    [256]struct {
		op    uint8
		resv  uint8
		flags uint16
		resv2 uint32
	}
}

const opSupported = 1 // IO_URING_OP_SUPPORTED

func doProbe() Probe {
	var p Probe
	var params iosys.IOURingParams
	fd, _, errno := unix.RawSyscall(iosys.SYS_IO_URING_SETUP, 2, uintptr(unsafe.Pointer(&params)), 0)
	if errno != 0 {
		p.Err = fmt.Errorf("io_uring_setup: %w", errno)
		return p
	}
	defer unix.Close(int(fd))
	p.Features = params.Features
	var pr ioUringProbe
	_, _, errno = unix.Syscall6(iosys.SYS_IO_URING_REGISTER, fd, uintptr(iosys.IORING_REGISTER_PROBE),
		uintptr(unsafe.Pointer(&pr)), 256, 0, 0)
	if errno != 0 {
		// Kernels before 5.6 have no probe; they also lack most ops we need.
		p.Err = fmt.Errorf("IORING_REGISTER_PROBE: %w", errno)
		return p
	}
	for i := 0; i < int(pr.opsLen) && i < len(pr.ops); i++ {
		if pr.ops[i].flags&opSupported != 0 {
			p.ops[pr.ops[i].op] = true
		}
	}
	for _, op := range []uint8{iosys.IORING_OP_READV, iosys.IORING_OP_WRITEV, iosys.IORING_OP_FSYNC} {
		if !p.ops[op] {
			p.Err = fmt.Errorf("io_uring lacks opcode %d", op)
			return p
		}
	}
	return p
}
