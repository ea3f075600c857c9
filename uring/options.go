//go:build linux

package uring

import (
	"fmt"
	"os"
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

var backendNames = [...]string{Auto: "auto", Ring: "io_uring", Threads: "threads"}

func (b Backend) String() string {
	if b >= 0 && int(b) < len(backendNames) {
		return backendNames[b]
	}
	return fmt.Sprintf("Backend(%d)", int(b))
}

// Options configure Open.
type Options struct {
	ReadOnly bool
	// Direct opens the file with O_DIRECT. Misaligned requests still work,
	// on the same descriptor, through aligned bounce buffers (U1).
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
	// NoWriteZeroes keeps WriteZeroes with Allocate on
	// fallocate(ZERO_RANGE) even where FALLOC_FL_WRITE_ZEROES would be
	// tried (U2), e.g. to measure what written extents buy.
	NoWriteZeroes bool
	// NoFlush makes Flush (and a queue's flush requests) do nothing, as
	// QEMU's cache=unsafe (BDRV_O_NO_FLUSH): nothing the File writes is
	// made durable by it, so a crash may lose any of it.
	NoFlush bool
}

const (
	defaultEntries = 256
	maxEntries     = 8192 // the SQ is 2*Entries; the kernel caps it at 32768
	defaultWorkers = 64
	maxRW          = 1 << 30 // largest single read/write we ask for
)

// withDefaults fills in the zero fields of o that have a default.
func (o Options) withDefaults() Options {
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
	return o
}
