package errordev

import (
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qring/qring/block"
)

// Op is the kind of a device operation.
type Op uint8

const (
	Read Op = iota
	Write
	Zero // WriteZeroes
	Flush
	Truncate
	numOps
)

var opNames = [numOps]string{"read", "write", "zero", "flush", "truncate"}

func (o Op) String() string {
	if o < numOps {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// IsWrite reports whether o can change device state (everything but Read).
func (o Op) IsWrite() bool { return o != Read && o < numOps }

// ErrInjected matches every error an injector made (E3).
var ErrInjected = errors.New("errordev: injected fault")

// InjectedError is an injected failure carrying an errno. It matches both
// ErrInjected and its Errno under errors.Is.
type InjectedError struct{ Errno syscall.Errno }

func (e *InjectedError) Error() string { return "errordev: injected " + e.Errno.Error() }

// Unwrap exposes the errno, so errors.Is(err, syscall.EIO) works.
func (e *InjectedError) Unwrap() error { return e.Errno }

// Is makes every InjectedError match ErrInjected.
func (e *InjectedError) Is(target error) bool { return target == ErrInjected }

var (
	// ErrInjectedEIO is an injected I/O error (errors.Is(err, syscall.EIO)).
	ErrInjectedEIO error = &InjectedError{Errno: syscall.EIO}
	// ErrInjectedENOSPC is an injected out-of-space error
	// (errors.Is(err, syscall.ENOSPC)).
	ErrInjectedENOSPC error = &InjectedError{Errno: syscall.ENOSPC}
)

// Options configure a Dev.
type Options struct {
	// Latency is slept before every op (after injection is decided).
	Latency time.Duration
	// LatencyFunc, if set, replaces Latency with a per-op delay.
	LatencyFunc func(op Op, off, n int64) time.Duration
}

// Dev wraps a child device and injects faults and latency.
type Dev struct {
	child    block.Device
	inj      atomic.Pointer[Injector]
	opts     Options
	ops      atomic.Int64
	injected atomic.Int64
}

var (
	_ block.Device     = (*Dev)(nil)
	_ block.ZeroWriter = (*Dev)(nil)
)

// New wraps child. inj may be nil (no faults; the Dev only counts ops).
func New(child block.Device, inj Injector, o Options) *Dev {
	d := &Dev{child: child, opts: o}
	d.SetInjector(inj)
	return d
}

// SetInjector replaces the injector (nil: none), e.g. to run setup
// fault-free and then arm a fault for the workload.
func (d *Dev) SetInjector(inj Injector) {
	if inj == nil {
		d.inj.Store(nil)
		return
	}
	d.inj.Store(&inj)
}

// Ops is the number of ops seen so far (E1).
func (d *Dev) Ops() int64 { return d.ops.Load() }

// Injected is the number of ops that failed by injection.
func (d *Dev) Injected() int64 { return d.injected.Load() }

// Unwrap returns the child device.
func (d *Dev) Unwrap() block.Device { return d.child }

// before numbers the op, asks the injector and applies latency.
func (d *Dev) before(op Op, off, n int64) error {
	d.ops.Add(1)
	if p := d.inj.Load(); p != nil {
		if err := (*p).MaybeError(op, off, n); err != nil {
			d.injected.Add(1)
			return &block.OpError{Op: op.String(), Off: off, Len: n, Err: err}
		}
	}
	lat := d.opts.Latency
	if d.opts.LatencyFunc != nil {
		lat = d.opts.LatencyFunc(op, off, n)
	}
	if lat > 0 {
		time.Sleep(lat)
	}
	return nil
}

func (d *Dev) Readv(off int64, bufs [][]byte) error {
	if err := d.before(Read, off, block.VecLen(bufs)); err != nil {
		return err
	}
	return d.child.Readv(off, bufs)
}

func (d *Dev) Writev(off int64, bufs [][]byte) error {
	if err := d.before(Write, off, block.VecLen(bufs)); err != nil {
		return err
	}
	return d.child.Writev(off, bufs)
}

func (d *Dev) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := d.before(Zero, off, n); err != nil {
		return err
	}
	return d.child.WriteZeroes(off, n, flags)
}

// ZeroThenWritev counts as a Zero op then a Write op (E2). It delegates to
// the child's ZeroThenWritev when there is one and neither op is faulted.
func (d *Dev) ZeroThenWritev(zoff, zn int64, zflags block.Flags, woff int64, bufs [][]byte) error {
	if err := d.before(Zero, zoff, zn); err != nil {
		return err
	}
	if werr := d.before(Write, woff, block.VecLen(bufs)); werr != nil {
		if err := d.child.WriteZeroes(zoff, zn, zflags); err != nil {
			return err
		}
		return werr
	}
	return block.ZeroThenWritev(d.child, zoff, zn, zflags, woff, bufs)
}

func (d *Dev) Flush() error {
	if err := d.before(Flush, 0, 0); err != nil {
		return err
	}
	return d.child.Flush()
}

func (d *Dev) Truncate(size int64) error {
	if err := d.before(Truncate, size, 0); err != nil {
		return err
	}
	return d.child.Truncate(size)
}

func (d *Dev) Size() (int64, error) { return d.child.Size() }
func (d *Dev) Caps() block.Caps     { return d.child.Caps() }
func (d *Dev) Close() error         { return d.child.Close() }
