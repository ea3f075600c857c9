package filter

import (
	"errors"
	"sync"

	"github.com/qring/qring/block"
)

// schedFlags are the request flags checked against Caps().ReqFlags; the
// rest are checked against Caps().ZeroFlags.
const schedFlags = block.Serialising | block.NoWait

// Typed errors; match with errors.Is (FL6).
var (
	// ErrMismatch: blkverify's test and reference devices returned
	// different data. The concrete error is a *MismatchError.
	ErrMismatch = errors.New("filter: blkverify mismatch")
	// ErrQuorum: fewer than vote-threshold children succeeded or agreed.
	ErrQuorum = errors.New("filter: quorum not reached")
	// ErrCompleted: a request to a mirror after Complete handed the
	// target over.
	ErrCompleted = errors.New("filter: mirror completed")
)

// CapsOf intersects the capabilities of devices that all receive a request
// (FL1): flags every device supports, the largest alignments, the first
// (primary) device's medium (but not RAM unless every device is RAM:
// writesMedia; a Failed device takes no writes and has none), Metered and
// Fixed if any device is, and AllocWritten and MergesWrites only if every
// device says so.
func CapsOf(devs ...block.Device) block.Caps {
	c := block.Caps{ZeroFlags: ^block.Flags(0), ReqFlags: ^block.Flags(0), Align: 1, MemAlign: 1,
		AllocWritten: len(devs) > 0, MergesWrites: len(devs) > 0}
	primary := true
	for _, d := range devs {
		dc := d.Caps()
		c.ZeroFlags &= dc.ZeroFlags
		c.ReqFlags &= dc.ReqFlags
		c.Align = max(c.Align, dc.Align)
		c.ZeroAlign = max(c.ZeroAlign, dc.ZeroAlign)
		c.MemAlign = max(c.MemAlign, dc.MemAlign)
		switch _, failed := d.(Failed); {
		case failed: // takes no writes: no medium
		case primary:
			c.Media, primary = dc.Media, false
		default:
			c.Media = writesMedia(c.Media, dc.Media)
		}
		c.Metered = c.Metered || dc.Metered
		c.Fixed = c.Fixed || dc.Fixed
		c.AllocWritten = c.AllocWritten && dc.AllocWritten
		c.MergesWrites = c.MergesWrites && dc.MergesWrites
	}
	if len(devs) == 0 {
		c.ZeroFlags, c.ReqFlags = 0, 0
	}
	if c.ZeroAlign <= c.Align {
		c.ZeroAlign = 0
	}
	return c
}

// writesMedia is the medium a layer reports when its writes reach a device
// of medium primary and another of medium other (FL1): the primary's,
// unless that is RAM and the other's is not (then the other's: the first
// device that is not RAM decides). Engines stream zeros ahead
// only on RAM, where that bandwidth is free; every copy pays for them.
func writesMedia(primary, other block.Media) block.Media {
	if primary == block.MediaRAM && other != block.MediaRAM {
		return other
	}
	return primary
}

// CheckFlags reports whether a WriteZeroes of [off, off+n) with flags may
// be passed on under caps; block.ErrNotSupported otherwise (FL2).
func CheckFlags(c block.Caps, off, n int64, flags block.Flags) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if flags&^schedFlags&^c.ZeroFlags != 0 || flags&schedFlags&^c.ReqFlags != 0 {
		return block.ErrNotSupported
	}
	if flags&block.Allocate != 0 && !block.Aligned(off, n, max(c.Align, c.ZeroAlign)) {
		return block.ErrNotSupported
	}
	return nil
}

// subVec returns the part [start, start+n) of the concatenation of bufs,
// as a new vector sharing the buffers' memory.
func subVec(bufs [][]byte, start, n int64) [][]byte {
	var out [][]byte
	for _, b := range bufs {
		if n <= 0 {
			break
		}
		l := int64(len(b))
		if start >= l {
			start -= l
			continue
		}
		e := min(l, start+n)
		out = append(out, b[start:e])
		n -= e - start
		start = 0
	}
	return out
}

// flatten copies bufs into one new buffer.
func flatten(bufs [][]byte) []byte {
	out := make([]byte, 0, block.VecLen(bufs))
	for _, b := range bufs {
		out = append(out, b...)
	}
	return out
}

// scatter copies src into bufs.
func scatter(bufs [][]byte, src []byte) {
	for _, b := range bufs {
		src = src[copy(b, src):]
	}
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// rangeLock serialises overlapping requests (FL3, FL5). Shared holders
// overlap freely; an exclusive holder excludes every overlapping holder.
// Waiting is FIFO-free: a waiter re-checks after every release, which is
// enough at the queue depths these layers see.
type rangeLock struct {
	mu   sync.Mutex
	cond sync.Cond
	held map[*heldRange]struct{}
}

type heldRange struct {
	off, end int64
	excl     bool
}

func (l *rangeLock) conflicts(r *heldRange) bool {
	for h := range l.held {
		if h.off < r.end && r.off < h.end && (h.excl || r.excl) {
			return true
		}
	}
	return false
}

// lock takes [off, off+n) (an empty range as one byte) and returns the
// release function.
func (l *rangeLock) lock(off, n int64, excl bool) func() {
	r := &heldRange{off: off, end: off + max(n, 1), excl: excl}
	l.mu.Lock()
	if l.held == nil {
		l.held = map[*heldRange]struct{}{}
		l.cond.L = &l.mu
	}
	for l.conflicts(r) {
		l.cond.Wait()
	}
	l.held[r] = struct{}{}
	l.mu.Unlock()
	return l.releaser(r)
}

// writev validates a vectored write at off and runs do (given the
// request's length) with its range held exclusively.
func (l *rangeLock) writev(off int64, bufs [][]byte, do func(n int64) error) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	defer l.lock(off, n, true)()
	return do(n)
}

// writeZeroes validates a WriteZeroes under caps (CheckFlags) and runs do
// with its range held exclusively (lockReq).
func (l *rangeLock) writeZeroes(caps block.Caps, off, n int64, flags block.Flags, do func() error) error {
	if err := CheckFlags(caps, off, n, flags); err != nil {
		return err
	}
	unlock, err := l.lockReq(off, n, flags)
	if err != nil {
		return err
	}
	defer unlock()
	return do()
}

func (l *rangeLock) releaser(r *heldRange) func() {
	return func() {
		l.mu.Lock()
		delete(l.held, r)
		l.cond.Broadcast()
		l.mu.Unlock()
	}
}

// tryLock takes [off, off+n) exclusively if no overlapping range is held,
// and returns its release function; nil if one is.
func (l *rangeLock) tryLock(off, n int64) func() {
	r := &heldRange{off: off, end: off + max(n, 1), excl: true}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		l.held = map[*heldRange]struct{}{}
		l.cond.L = &l.mu
	}
	if l.conflicts(r) {
		return nil
	}
	l.held[r] = struct{}{}
	return l.releaser(r)
}

// lockReq takes [off, off+n) exclusively for a request with flags: with
// NoWait it does not wait for an overlapping request in flight but fails
// with block.ErrBusy, having done nothing (B5).
func (l *rangeLock) lockReq(off, n int64, flags block.Flags) (func(), error) {
	if flags&block.NoWait == 0 {
		return l.lock(off, n, true), nil
	}
	if unlock := l.tryLock(off, n); unlock != nil {
		return unlock, nil
	}
	return nil, block.ErrBusy
}

// parallel runs f(i) for i in [0, n) concurrently and returns the errors.
func parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	if n == 1 {
		errs[0] = f(0)
		return errs
	}
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() {
			errs[i] = f(i)
		})
	}
	errs[0] = f(0)
	wg.Wait()
	return errs
}

// Failed is a device standing in for a child that could not be opened:
// every request fails with Err. Its Caps claim every flag so that it does
// not narrow a quorum's capabilities (FL1 counts only children that can
// take the request).
type Failed struct{ Err error }

var _ block.Device = Failed{}

func (f Failed) Readv(int64, [][]byte) error                 { return f.Err }
func (f Failed) Writev(int64, [][]byte) error                { return f.Err }
func (f Failed) WriteZeroes(int64, int64, block.Flags) error { return f.Err }
func (f Failed) Flush() error                                { return f.Err }
func (f Failed) Size() (int64, error)                        { return 0, f.Err }
func (f Failed) Truncate(int64) error                        { return f.Err }
func (f Failed) Caps() block.Caps {
	return block.Caps{ZeroFlags: ^block.Flags(0), ReqFlags: ^block.Flags(0), Align: 1, MemAlign: 1,
		AllocWritten: true, MergesWrites: true}
}
func (f Failed) Close() error { return nil }
