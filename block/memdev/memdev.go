// Package memdev is an in-memory block.Device for tests. It remembers which
// writes are durable (completed before a Flush) so that CrashClone can
// produce the device as a power cut would leave it: everything flushed, plus
// a seeded random subset of what was not, torn at sector granularity.
package memdev

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/qring/qring/block"
)

// SectorSize is the granularity at which unflushed writes may tear.
const SectorSize = 512

// Options configure a Dev.
type Options struct {
	// ZeroFlags are the WriteZeroes flags advertised; default
	// Allocate|MayUnmap. Set NoAllocate to advertise none.
	ZeroFlags  block.Flags
	NoAllocate bool
	// Align is the advertised request alignment (default 1).
	Align int64
	// Media is the advertised Caps().Media. The default is MediaUnknown,
	// not MediaRAM: engines pick medium-dependent strategies from it
	// (qcow2 streams zeros ahead in the background on RAM), which would
	// add asynchronous writes to every test's op trace; tests that want
	// them ask.
	Media block.Media
	// Metered is the advertised Caps().Metered.
	Metered bool
}

type pending struct {
	off   int64
	data  []byte // nil for a zero range
	n     int64
	trunc bool
}

// Metrics count operations.
type Metrics struct {
	Reads, Writes, Zeroes, Flushes, Truncates atomic.Int64
	BytesWritten, BytesZeroed                 atomic.Int64
}

// Dev is an in-memory device.
type Dev struct {
	mu      sync.RWMutex
	data    []byte
	durable []byte
	log     []pending
	caps    block.Caps
	closed  bool
	M       Metrics
}

var _ block.Device = (*Dev)(nil)

// New returns an empty device.
func New(o Options) *Dev {
	zf := o.ZeroFlags
	if zf == 0 && !o.NoAllocate {
		zf = block.Allocate | block.MayUnmap
	}
	if o.NoAllocate {
		zf &^= block.Allocate
	}
	a := o.Align
	if a <= 0 {
		a = 1
	}
	return &Dev{caps: block.Caps{ZeroFlags: zf, ReqFlags: block.Serialising | block.NoWait, Align: a, MemAlign: 1, Media: o.Media, Metered: o.Metered}}
}

// FromBytes returns a device holding a copy of b, all of it durable.
func FromBytes(b []byte, o Options) *Dev {
	d := New(o)
	d.data = append([]byte(nil), b...)
	d.durable = append([]byte(nil), b...)
	return d
}

func grow(b []byte, n int64) []byte {
	if int64(len(b)) >= n {
		return b
	}
	if int64(cap(b)) >= n {
		old := len(b)
		b = b[:n]
		clear(b[old:])
		return b
	}
	nb := make([]byte, n, n+n/4)
	copy(nb, b)
	return nb
}

func (d *Dev) Readv(off int64, bufs [][]byte) error {
	if err := block.CheckRange(off, block.VecLen(bufs)); err != nil {
		return err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return block.ErrClosed
	}
	d.M.Reads.Add(1)
	for _, b := range bufs {
		n := 0
		if off < int64(len(d.data)) {
			n = copy(b, d.data[off:])
		}
		clear(b[n:])
		off += int64(len(b))
	}
	return nil
}

func (d *Dev) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return block.ErrClosed
	}
	d.M.Writes.Add(1)
	d.M.BytesWritten.Add(n)
	d.data = grow(d.data, off+n)
	cp := make([]byte, 0, n)
	for _, b := range bufs {
		copy(d.data[off+int64(len(cp)):], b)
		cp = append(cp, b...)
	}
	d.log = append(d.log, pending{off: off, data: cp, n: n})
	return nil
}

func (d *Dev) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	zf := flags &^ (block.Serialising | block.NoWait)
	if zf&^d.caps.ZeroFlags != 0 {
		return block.ErrNotSupported
	}
	if flags&block.Allocate != 0 && !block.Aligned(off, n, d.caps.Align) {
		return block.ErrNotSupported
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return block.ErrClosed
	}
	d.M.Zeroes.Add(1)
	d.M.BytesZeroed.Add(n)
	d.data = grow(d.data, off+n)
	clear(d.data[off : off+n])
	d.log = append(d.log, pending{off: off, n: n})
	return nil
}

func (d *Dev) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return block.ErrClosed
	}
	d.M.Flushes.Add(1)
	for _, p := range d.log {
		d.durable = apply(d.durable, p, p.n)
	}
	d.log = d.log[:0]
	return nil
}

func apply(b []byte, p pending, n int64) []byte {
	if p.trunc {
		if p.off < int64(len(b)) {
			return b[:p.off]
		}
		return grow(b, p.off)
	}
	b = grow(b, p.off+n)
	if p.data == nil {
		clear(b[p.off : p.off+n])
	} else {
		copy(b[p.off:], p.data[:n])
	}
	return b
}

func (d *Dev) Size() (int64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, block.ErrClosed
	}
	return int64(len(d.data)), nil
}

func (d *Dev) Truncate(size int64) error {
	if size < 0 {
		return block.ErrRange
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return block.ErrClosed
	}
	d.M.Truncates.Add(1)
	if size < int64(len(d.data)) {
		d.data = d.data[:size]
	} else {
		d.data = grow(d.data, size)
	}
	d.log = append(d.log, pending{off: size, trunc: true})
	return nil
}

func (d *Dev) Caps() block.Caps { return d.caps }

func (d *Dev) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return block.ErrClosed
	}
	d.closed = true
	return nil
}

// Bytes returns a copy of the current contents.
func (d *Dev) Bytes() []byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return append([]byte(nil), d.data...)
}

// Unflushed is the number of operations not yet covered by a Flush.
func (d *Dev) Unflushed() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.log)
}

// CrashClone returns a new device as a power cut at this moment could leave
// this one: all flushed state, then each unflushed operation, in order,
// with probability keep; a kept write may be torn so that only a prefix of
// whole sectors reaches the media. The clone is fully durable and open.
func (d *Dev) CrashClone(rng *rand.Rand, keep float64) *Dev {
	d.mu.RLock()
	defer d.mu.RUnlock()
	c := &Dev{caps: d.caps}
	img := append([]byte(nil), d.durable...)
	for _, p := range d.log {
		if rng.Float64() >= keep {
			continue
		}
		n := p.n
		if !p.trunc && n > SectorSize && rng.IntN(4) == 0 {
			n = int64(rng.IntN(int(n/SectorSize))) * SectorSize
		}
		img = apply(img, p, n)
	}
	c.data = img
	c.durable = append([]byte(nil), img...)
	return c
}
