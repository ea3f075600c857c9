// Package holddev is a block.Device wrapper for tests that force
// interleavings deterministically: it can hold one chosen op (matched by
// kind, offset range, a predicate and its occurrence number) until the
// test releases it, delay ops by a chosen amount so that completions
// reorder, and call a hook before every mutating op (for crash clones).
//
// Invariants:
//
//	H1  The data is the child's: holddev only delays ops and observes
//	    them, it never alters, drops or reorders the bytes of one op.
//	H2  A hold catches exactly one op: the Nth op (1-based, 0 meaning 1)
//	    that matches, counted from the moment the hold was armed. Other
//	    ops, including later matching ones, pass.
//	H3  A held op is held Before it reaches the child (the device has not
//	    seen it) or, with Match.After, after the child completed it and
//	    before the caller is told (a completion held). Release lets it go;
//	    Close of the wrapper releases every hold.
//	H4  Before hooks run before the op reaches the child, serialised with
//	    each other, so a hook sees the child between ops.
package holddev

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qring/qring/block"
)

// Kind is the kind of a device op (a bit set in Match.Kinds).
type Kind uint8

const (
	Read Kind = 1 << iota
	Write
	Zero
	ZeroWrite // ZeroThenWritev: Off/Len are the write's, ZOff/ZLen the zeroing's
	Flush
	Truncate
)

// Mutating are the kinds that change the device.
const Mutating = Write | Zero | ZeroWrite | Flush | Truncate

// kindNames are the kinds' names, by bit position (Kind.index).
var kindNames = [...]string{"read", "write", "zero", "zero+write", "flush", "truncate"}

// index is the bit position of a single kind, or -1 for no kind or a set.
func (k Kind) index() int {
	i := bits.TrailingZeros8(uint8(k))
	if k == 0 || k != 1<<i || i >= len(kindNames) {
		return -1
	}
	return i
}

func (k Kind) String() string {
	if i := k.index(); i >= 0 {
		return kindNames[i]
	}
	return fmt.Sprintf("kind(%#x)", uint8(k))
}

// Op describes one device op.
type Op struct {
	Kind       Kind
	Seq        int64 // order of arrival at the wrapper, from 1
	Off, Len   int64 // data range (Truncate: Off is the new size)
	ZOff, ZLen int64 // ZeroWrite: the zeroing range
	Flags      block.Flags
	// Bufs are the caller's buffers (reads: not yet filled before the
	// child ran). Valid only during the predicate or hook call.
	Bufs [][]byte
}

func (o Op) String() string {
	switch o.Kind {
	case Flush:
		return fmt.Sprintf("#%d flush", o.Seq)
	case Truncate:
		return fmt.Sprintf("#%d truncate %d", o.Seq, o.Off)
	case ZeroWrite:
		return fmt.Sprintf("#%d zero [%#x,+%#x) then write [%#x,+%#x)", o.Seq, o.ZOff, o.ZLen, o.Off, o.Len)
	}
	return fmt.Sprintf("#%d %s [%#x,+%#x) %v", o.Seq, o.Kind, o.Off, o.Len, o.Flags)
}

// Overlaps reports whether the op's data (or zeroing) range meets [off, end).
func (o Op) Overlaps(off, end int64) bool {
	if o.Off < end && off < o.Off+o.Len {
		return true
	}
	return o.Kind == ZeroWrite && o.ZOff < end && off < o.ZOff+o.ZLen
}

// Match selects the op a Hold catches.
type Match struct {
	Kinds    Kind  // 0: any kind
	Off, End int64 // if End > Off: the op must overlap [Off, End)
	// Nth: catch the Nth matching op (1-based; 0 means the first).
	Nth int
	// Fn, if set, must also return true.
	Fn func(Op) bool
	// After holds the completion: the child has done the op, the caller
	// does not know yet (H3).
	After bool
}

func (m *Match) matches(o Op) bool {
	if m.Kinds != 0 && m.Kinds&o.Kind == 0 {
		return false
	}
	if m.End > m.Off && !o.Overlaps(m.Off, m.End) {
		return false
	}
	return m.Fn == nil || m.Fn(o)
}

// Hold is an armed hold (Dev.Hold).
type Hold struct {
	m       Match
	seen    int
	caught  bool
	op      Op
	reached chan struct{} // closed when the op is caught
	release chan struct{} // closed by Release
	relOnce sync.Once
	done    chan struct{} // closed when the caught op returned to its caller
}

// Reached is closed once the hold caught its op.
func (h *Hold) Reached() <-chan struct{} { return h.reached }

// Done is closed once the caught op, released, returned to its caller.
func (h *Hold) Done() <-chan struct{} { return h.done }

// Op is the caught op (valid after Reached; Bufs cleared).
func (h *Hold) Op() Op { <-h.reached; return h.op }

// Wait waits up to d for the hold to catch its op.
func (h *Hold) Wait(d time.Duration) bool {
	select {
	case <-h.reached:
		return true
	case <-time.After(d):
		return false
	}
}

// Release lets the held op (or, if none was caught yet, the op it will
// catch) proceed. Idempotent.
func (h *Hold) Release() { h.relOnce.Do(func() { close(h.release) }) }

// Options configure a Dev.
type Options struct {
	// Delay, if set, returns how long to sleep before passing an op to
	// the child (so that concurrent completions reorder).
	Delay func(Op) time.Duration
	// Before, if set, is called before every mutating op reaches the
	// child, serialised (H4).
	Before func(Op)
	// NoClose makes Close release holds without closing the child.
	NoClose bool
}

// Counts are per-kind op counts and holds caught.
type Counts struct {
	Reads, Writes, Zeroes, ZeroWrites, Flushes, Truncates, Held int64
}

// Dev wraps a child device.
type Dev struct {
	child block.Device
	o     Options
	seq   atomic.Int64

	mu     sync.Mutex
	holds  []*Hold // armed, not caught yet
	caught []*Hold // caught (ReleaseAll releases them too)

	hookMu sync.Mutex

	ops  [len(kindNames)]atomic.Int64 // by Kind.index
	held atomic.Int64
}

var (
	_ block.Device     = (*Dev)(nil)
	_ block.ZeroWriter = (*Dev)(nil)
)

// New wraps child.
func New(child block.Device, o Options) *Dev { return &Dev{child: child, o: o} }

// Unwrap returns the child.
func (d *Dev) Unwrap() block.Device { return d.child }

// Counts returns the op counts so far.
func (d *Dev) Counts() Counts {
	n := func(k Kind) int64 { return d.ops[k.index()].Load() }
	return Counts{n(Read), n(Write), n(Zero), n(ZeroWrite), n(Flush), n(Truncate), d.held.Load()}
}

// Hold arms a hold for the op m matches (H2).
func (d *Dev) Hold(m Match) *Hold {
	if m.Nth <= 0 {
		m.Nth = 1
	}
	h := &Hold{m: m, reached: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
	d.mu.Lock()
	d.holds = append(d.holds, h)
	d.mu.Unlock()
	return h
}

// ReleaseAll releases every hold, caught or not, and disarms them.
func (d *Dev) ReleaseAll() {
	d.mu.Lock()
	hs := append(d.holds, d.caught...)
	d.holds, d.caught = nil, nil
	d.mu.Unlock()
	for _, h := range hs {
		h.Release()
	}
}

// catch returns the hold that catches o, if any.
func (d *Dev) catch(o Op) *Hold {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, h := range d.holds {
		if h.caught || !h.m.matches(o) {
			continue
		}
		h.seen++
		if h.seen < h.m.Nth {
			continue
		}
		h.caught = true
		h.op = o
		h.op.Bufs = nil
		d.holds = append(d.holds[:i:i], d.holds[i+1:]...)
		d.caught = append(d.caught, h)
		return h
	}
	return nil
}

func (d *Dev) run(o Op, fn func() error) error {
	o.Seq = d.seq.Add(1)
	if i := o.Kind.index(); i >= 0 {
		d.ops[i].Add(1)
	}
	var h *Hold
	d.mu.Lock()
	armed := len(d.holds) > 0
	d.mu.Unlock()
	if armed {
		h = d.catch(o)
	}
	if h != nil {
		d.held.Add(1)
		defer close(h.done)
		if !h.m.After {
			close(h.reached)
			<-h.release
		}
	}
	if d.o.Delay != nil {
		if t := d.o.Delay(o); t > 0 {
			time.Sleep(t)
		}
	}
	var err error
	if d.o.Before != nil && o.Kind&Mutating != 0 {
		d.hookMu.Lock()
		d.o.Before(o)
		err = fn()
		d.hookMu.Unlock()
	} else {
		err = fn()
	}
	if h != nil && h.m.After {
		close(h.reached)
		<-h.release
	}
	return err
}

func (d *Dev) Readv(off int64, bufs [][]byte) error {
	return d.run(Op{Kind: Read, Off: off, Len: block.VecLen(bufs), Bufs: bufs}, func() error { return d.child.Readv(off, bufs) })
}

func (d *Dev) Writev(off int64, bufs [][]byte) error {
	return d.run(Op{Kind: Write, Off: off, Len: block.VecLen(bufs), Bufs: bufs}, func() error { return d.child.Writev(off, bufs) })
}

func (d *Dev) WriteZeroes(off, n int64, flags block.Flags) error {
	return d.run(Op{Kind: Zero, Off: off, Len: n, Flags: flags}, func() error { return d.child.WriteZeroes(off, n, flags) })
}

// ZeroThenWritev is one op (the pair is ordered by the child, or zero
// then write when the child cannot link them).
func (d *Dev) ZeroThenWritev(zoff, zn int64, zflags block.Flags, woff int64, bufs [][]byte) error {
	o := Op{Kind: ZeroWrite, Off: woff, Len: block.VecLen(bufs), ZOff: zoff, ZLen: zn, Flags: zflags, Bufs: bufs}
	return d.run(o, func() error {
		return block.ZeroThenWritev(d.child, zoff, zn, zflags, woff, bufs)
	})
}

func (d *Dev) Flush() error {
	return d.run(Op{Kind: Flush}, d.child.Flush)
}

func (d *Dev) Truncate(size int64) error {
	return d.run(Op{Kind: Truncate, Off: size}, func() error { return d.child.Truncate(size) })
}

func (d *Dev) Size() (int64, error) { return d.child.Size() }
func (d *Dev) Caps() block.Caps     { return d.child.Caps() }

// Close releases every hold and closes the child (unless NoClose).
func (d *Dev) Close() error {
	d.ReleaseAll()
	if d.o.NoClose {
		return nil
	}
	return d.child.Close()
}
