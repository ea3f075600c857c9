// Package memdev is an in-memory block.Device for tests. It remembers which
// writes are durable (completed before a Flush) so that CrashClone can
// produce the device as a power cut would leave it: everything flushed, plus
// a seeded random subset of what was not, torn at sector granularity.
//
// Concurrency (block.Device B1, B5): every data request holds its byte
// range in a range lock for its whole duration, exclusively for writes and
// zeroing, shared for reads. Requests on disjoint ranges never wait for
// each other: they copy under the shared side of mu, which only Truncate,
// Flush, Close, CrashClone and a write that must grow the backing array
// take exclusively, and none of those waits for a request's range. A
// Serialising request waits for every overlapping one (all writes do);
// with NoWait it fails with ErrBusy instead, having done nothing.
//
// Crash semantics: a write copies its data and appends its log entry under
// one hold of mu (shared), so CrashClone (mu exclusive) sees every write
// either applied and logged or not started; overlapping writes are applied
// and logged in the same order, since both happen under the range lock.
//
// Memory: the contents are 4 KiB pages shared copy-on-write between the
// device, its durable state and its crash clones (store.go), so a Flush
// or a crash clone costs a table of pointers, not a copy of the bytes
// (each copied all of the bytes before, a clone twice).
package memdev

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
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
	// Fixed is the advertised Caps().Fixed (the size still changes).
	Fixed bool
	// MergesWrites is the advertised Caps().MergesWrites (a hint, block
	// B10: the device does not merge, tests use it to take the paths an
	// engine takes over a merging device).
	MergesWrites bool
	// AllocWritten is the advertised Caps().AllocWritten (a hint, block
	// B9: memdev has no extents, so its zeroed ranges are written ones
	// anyway; tests use it to take the paths an engine takes over a
	// device that zeroes with FALLOC_FL_WRITE_ZEROES).
	AllocWritten bool
	// OnWrite, if set, is called by Writev and WriteZeroes with the
	// request's range locked, before anything is applied: a test can
	// block in it to hold a request in flight (blocktest.Stall). It must
	// not call back into the Dev for an overlapping range.
	OnWrite func(off, n int64)
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
	// mu guards the shape of data (its slice header), durable and
	// closed. Requests copy bytes holding it shared (their ranges are
	// disjoint by the range lock); anything that replaces or resizes
	// data holds it exclusively.
	mu      sync.RWMutex
	data    *store
	durable *store
	logMu   sync.Mutex // guards log (appended under mu shared)
	log     []pending
	closed  bool
	rl      rangeLock
	caps    block.Caps
	onWrite func(off, n int64)
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
	return &Dev{
		data:    newStore(),
		durable: newStore(),
		caps:    block.Caps{ZeroFlags: zf, ReqFlags: block.Serialising | block.NoWait, Align: a, MemAlign: 1, Media: o.Media, Metered: o.Metered, MergesWrites: o.MergesWrites, AllocWritten: o.AllocWritten, Fixed: o.Fixed},
		onWrite: o.OnWrite,
	}
}

// FromBytes returns a device holding a copy of b, all of it durable.
func FromBytes(b []byte, o Options) *Dev {
	d := New(o)
	d.data.resize(int64(len(b)))
	d.data.writeAt(b, 0)
	d.durable = d.data.snapshot()
	return d
}

// isClosed is a fast check before taking the range lock; the
// authoritative one is made again under mu.
func (d *Dev) isClosed() bool {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.closed
}

func (d *Dev) Readv(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if d.isClosed() {
		return block.ErrClosed
	}
	if n > 0 {
		id := d.rl.lockID(off, n, false)
		defer d.rl.release(id)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return block.ErrClosed
	}
	d.M.Reads.Add(1)
	for _, b := range bufs {
		k := int64(0)
		if off < d.data.size {
			k = min(int64(len(b)), d.data.size-off)
			d.data.readAt(b[:k], off)
		}
		clear(b[k:])
		off += int64(len(b))
	}
	return nil
}

// apply runs fn (which changes data over [off, off+n) and returns the log
// entry) under mu: shared when data is long enough, exclusive when it must
// grow. The caller holds [off, off+n) in the range lock.
func (d *Dev) apply(off, n int64, fn func() pending) error {
	d.mu.RLock()
	if off+n <= d.data.size {
		defer d.mu.RUnlock()
		if d.closed {
			return block.ErrClosed
		}
		p := fn()
		d.logMu.Lock()
		d.log = append(d.log, p)
		d.logMu.Unlock()
		return nil
	}
	d.mu.RUnlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return block.ErrClosed
	}
	d.data.resize(max(d.data.size, off+n))
	d.log = append(d.log, fn())
	return nil
}

// begin takes the range of a write request (honouring Serialising|NoWait)
// and runs the OnWrite hook; it returns the release function.
func (d *Dev) begin(off, n int64, flags block.Flags) (func(), error) {
	if d.isClosed() {
		return nil, block.ErrClosed
	}
	var unlock func()
	if flags&block.NoWait != 0 {
		if unlock = d.rl.tryLock(off, n); unlock == nil {
			return nil, block.ErrBusy
		}
	} else {
		unlock = d.rl.lock(off, n, true)
	}
	if d.onWrite != nil {
		d.onWrite(off, n)
	}
	return unlock, nil
}

// mutate is a write request's path: an empty request only checks that
// the device is open; otherwise it takes the range (begin) and applies
// fn, the change and its log entry (apply).
func (d *Dev) mutate(off, n int64, flags block.Flags, fn func() pending) error {
	if n == 0 {
		if d.isClosed() {
			return block.ErrClosed
		}
		return nil
	}
	unlock, err := d.begin(off, n, flags)
	if err != nil {
		return err
	}
	defer unlock()
	return d.apply(off, n, fn)
}

func (d *Dev) Writev(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	return d.mutate(off, n, 0, func() pending {
		d.M.Writes.Add(1)
		d.M.BytesWritten.Add(n)
		cp := make([]byte, 0, n)
		for _, b := range bufs {
			cp = append(cp, b...)
		}
		d.data.writeAt(cp, off)
		return pending{off: off, data: cp, n: n}
	})
}

func (d *Dev) WriteZeroes(off, n int64, flags block.Flags) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	if flags&^d.caps.ReqFlags&^d.caps.ZeroFlags != 0 {
		return block.ErrNotSupported
	}
	if flags&block.Allocate != 0 && !block.Aligned(off, n, d.caps.Align) {
		return block.ErrNotSupported
	}
	return d.mutate(off, n, flags, func() pending {
		d.M.Zeroes.Add(1)
		d.M.BytesZeroed.Add(n)
		d.data.zero(off, n)
		return pending{off: off, n: n}
	})
}

func (d *Dev) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return block.ErrClosed
	}
	d.M.Flushes.Add(1)
	// data is durable with every logged operation applied in order
	// (each is applied and logged under one hold of mu), so that is
	// what durable becomes: a snapshot, sharing data's pages.
	d.durable = d.data.snapshot()
	d.log = d.log[:0]
	return nil
}

// applyTo applies the first n bytes of p (all of a truncation) to s.
func applyTo(s *store, p pending, n int64) {
	if p.trunc {
		s.resize(p.off)
		return
	}
	s.resize(max(s.size, p.off+n))
	if p.data == nil {
		s.zero(p.off, n)
	} else {
		s.writeAt(p.data[:n], p.off)
	}
}

func (d *Dev) Size() (int64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, block.ErrClosed
	}
	return d.data.size, nil
}

// Truncate resizes the device. It does not wait for requests in flight
// (none of them is copying while it holds mu): a request overlapping the
// cut completes before or after it, in some order (B1).
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
	d.data.resize(size) // a later growth reads zeros past the cut
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
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.data.bytes()
}

// WriteTo writes the current contents to w (io.WriterTo) through a
// buffer of at most 1 MiB, where Bytes would copy all of them first.
func (d *Dev) WriteTo(w io.Writer) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	buf := make([]byte, min(d.data.size, 1<<20))
	var off int64
	for off < d.data.size {
		b := buf[:min(int64(len(buf)), d.data.size-off)]
		d.data.readAt(b, off)
		n, err := w.Write(b)
		off += int64(n)
		if err != nil {
			return off, err
		}
	}
	return off, nil
}

// WriteFile writes the current contents to the file at path (created
// or truncated, mode 0644): os.WriteFile(path, d.Bytes(), 0o644) without
// the copy.
func (d *Dev) WriteFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := d.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Clone returns an independent device with the current contents, all of
// them durable (a crash clone that keeps every write whole); it shares
// pages with d until either writes them.
func (d *Dev) Clone() *Dev {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &Dev{caps: d.caps, data: d.data.snapshot()}
	c.durable = c.data.snapshot()
	return c
}

// Sum returns the SHA-256 of the current contents (of what Bytes would
// return), without copying them.
func (d *Dev) Sum() [sha256.Size]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.data.sum()
}

// Unflushed is the number of operations not yet covered by a Flush.
func (d *Dev) Unflushed() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.log)
}

// CrashClone returns a new device as a power cut at this moment could leave
// this one: all flushed state, then each unflushed operation, in order,
// with probability keep; a kept write may be torn so that only a prefix of
// whole sectors reaches the media. The clone is fully durable and open.
//
// It holds mu exclusively, so every write is either applied and logged or
// not started: the snapshot is consistent even with requests in flight.
func (d *Dev) CrashClone(rng *rand.Rand, keep float64) *Dev {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &Dev{caps: d.caps}
	img := d.durable.snapshot()
	for _, p := range d.log {
		if rng.Float64() >= keep {
			continue
		}
		n := p.n
		if !p.trunc && n > SectorSize && rng.IntN(4) == 0 {
			n = int64(rng.IntN(int(n/SectorSize))) * SectorSize
		}
		applyTo(img, p, n)
	}
	c.data = img
	c.durable = img.snapshot()
	return c
}

// rangeLock holds byte ranges: shared holders overlap freely, an
// exclusive holder excludes every overlapping holder. Waiters re-check
// after every release (memdev sees test queue depths).
type rangeLock struct {
	mu   sync.Mutex
	cond sync.Cond
	held []heldRange
	seq  uint64
}

type heldRange struct {
	off, end int64
	excl     bool
	id       uint64
}

func (l *rangeLock) conflicts(off, end int64, excl bool) bool {
	for _, h := range l.held {
		if h.off < end && off < h.end && (h.excl || excl) {
			return true
		}
	}
	return false
}

func (l *rangeLock) add(off, end int64, excl bool) func() {
	id := l.addID(off, end, excl)
	return func() { l.release(id) }
}

func (l *rangeLock) addID(off, end int64, excl bool) uint64 {
	l.seq++
	l.held = append(l.held, heldRange{off: off, end: end, excl: excl, id: l.seq})
	return l.seq
}

// release drops the range taken as id.
func (l *rangeLock) release(id uint64) {
	l.mu.Lock()
	for i, h := range l.held {
		if h.id == id {
			l.held[i] = l.held[len(l.held)-1]
			l.held = l.held[:len(l.held)-1]
			break
		}
	}
	l.cond.Broadcast()
	l.mu.Unlock()
}

// lock takes [off, off+n) (n > 0) and returns the release function.
func (l *rangeLock) lock(off, n int64, excl bool) func() {
	id := l.lockID(off, n, excl)
	return func() { l.release(id) }
}

// lockID is lock without a closure (no allocation on the read path);
// release(id) undoes it.
func (l *rangeLock) lockID(off, n int64, excl bool) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond.L == nil {
		l.cond.L = &l.mu
	}
	for l.conflicts(off, off+n, excl) {
		l.cond.Wait()
	}
	return l.addID(off, off+n, excl)
}

// tryLock takes [off, off+n) exclusively if nothing overlapping is held;
// nil otherwise.
func (l *rangeLock) tryLock(off, n int64) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond.L == nil {
		l.cond.L = &l.mu
	}
	if l.conflicts(off, off+n, true) {
		return nil
	}
	return l.add(off, off+n, true)
}
