package latdev

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/qring/qring/block"
)

// Model is a latency model. Zero fields cost nothing.
type Model struct {
	// PerOp is charged to every op: command overhead, or a network round
	// trip for distributed storage.
	PerOp time.Duration
	// SeekMin is charged to any op that does not start where the previous
	// op ended (settle time plus average rotational latency).
	SeekMin time.Duration
	// SeekTime is the head-travel cost per SeekDistance bytes of distance;
	// it scales linearly.
	SeekTime     time.Duration
	SeekDistance int64
	// SeekMax caps the whole seek cost (a full stroke); 0 means no cap.
	SeekMax time.Duration
	// Bandwidth is the transfer rate of reads and writes in bytes per
	// second; 0 means unlimited.
	Bandwidth int64
	// AllocGranularity is the extent size at which new space is tracked
	// (default 1 MiB when any Alloc cost is set).
	AllocGranularity int64
	// AllocZero is charged per new extent first touched by WriteZeroes
	// (fallocate of new space: a thin-provisioned volume reserving it).
	AllocZero time.Duration
	// AllocWrite is charged per new extent first touched by a data write.
	AllocWrite time.Duration
	// Flush is charged by Flush on top of PerOp (drive cache flush, or a
	// replicated commit).
	Flush time.Duration
	// Parallel is how many ops are serviced at once (LD1); 1 is a
	// single-head disk, 0 means unlimited.
	Parallel int
	// Sleep waits out a cost; nil means time.Sleep. Tests may substitute a
	// recorder.
	Sleep func(time.Duration)
	// Media is the medium the model stands for, reported as
	// Caps().Media in place of the child's (whose timing the model
	// replaces). MediaUnknown for models that are no particular medium.
	Media block.Media
}

// HDD is a 7200 rpm disk: one head, ~150 MB/s, a seek of 0.5 ms plus 4 ms
// per 256 GiB of travel (about the 4 ms average for random I/O over a 1 TB
// disk) capped at 10 ms, and a 10 ms cache flush. New space costs nothing
// extra: a local filesystem allocates cheaply compared with a seek.
func HDD() Model {
	return Model{
		PerOp:        50 * time.Microsecond,
		SeekMin:      500 * time.Microsecond,
		SeekTime:     4 * time.Millisecond,
		SeekDistance: 256 << 30,
		SeekMax:      10 * time.Millisecond,
		Bandwidth:    150_000_000,
		Flush:        10 * time.Millisecond,
		Parallel:     1,
		Media:        block.MediaHDD,
	}
}

// Distributed is replicated network storage (Ceph/EBS-like): 500 µs per
// op, 1 GB/s, no seeks, 2 ms to allocate each new 1 MiB extent (1.5 ms if
// it is fallocated rather than written), 1 ms flush, 128 ops in parallel.
func Distributed() Model {
	return Model{
		PerOp:            500 * time.Microsecond,
		Bandwidth:        1_000_000_000,
		AllocGranularity: 1 << 20,
		AllocWrite:       2 * time.Millisecond,
		AllocZero:        1500 * time.Microsecond,
		Flush:            time.Millisecond,
		Parallel:         128,
	}
}

// Scaled returns m with every duration multiplied by f and the bandwidth
// divided by f, so tests can run a preset quickly with the same shape.
func (m Model) Scaled(f float64) Model {
	s := func(d time.Duration) time.Duration { return time.Duration(float64(d) * f) }
	m.PerOp, m.SeekMin, m.SeekTime, m.SeekMax = s(m.PerOp), s(m.SeekMin), s(m.SeekTime), s(m.SeekMax)
	m.AllocZero, m.AllocWrite, m.Flush = s(m.AllocZero), s(m.AllocWrite), s(m.Flush)
	if m.Bandwidth > 0 && f > 0 {
		m.Bandwidth = int64(float64(m.Bandwidth) / f)
	}
	return m
}

// Stats are cumulative modelled costs.
type Stats struct {
	Ops int64
	// Modelled is the total cost charged; Seek and Alloc are its parts.
	Modelled, Seek, Alloc time.Duration
	// Seeks counts non-sequential ops; NewExtents counts allocated extents.
	Seeks, NewExtents int64
}

// Dev delays ops on its child according to a Model.
type Dev struct {
	child block.Device
	m     Model
	slots chan struct{} // nil when Parallel is 0

	mu      sync.Mutex // guards head and extents (LD2)
	head    int64
	extents map[int64]struct{}

	ops, modelled, seek, alloc, seeks, newExtents atomic.Int64
}

var (
	_ block.Device     = (*Dev)(nil)
	_ block.ZeroWriter = (*Dev)(nil)
)

// New wraps child with model m.
func New(child block.Device, m Model) *Dev {
	if m.AllocGranularity <= 0 {
		m.AllocGranularity = 1 << 20
	}
	if m.Sleep == nil {
		m.Sleep = time.Sleep
	}
	d := &Dev{child: child, m: m, extents: make(map[int64]struct{})}
	if m.Parallel > 0 {
		d.slots = make(chan struct{}, m.Parallel)
	}
	return d
}

// Model returns the model in use.
func (d *Dev) Model() Model { return d.m }

// Unwrap returns the child device.
func (d *Dev) Unwrap() block.Device { return d.child }

// Stats returns the cumulative costs.
func (d *Dev) Stats() Stats {
	return Stats{
		Ops:        d.ops.Load(),
		Modelled:   time.Duration(d.modelled.Load()),
		Seek:       time.Duration(d.seek.Load()),
		Alloc:      time.Duration(d.alloc.Load()),
		Seeks:      d.seeks.Load(),
		NewExtents: d.newExtents.Load(),
	}
}

type kind uint8

const (
	kRead kind = iota
	kWrite
	kZero
	kFlush
	kTruncate
)

// cost computes an op's cost and advances the model state (LD2).
func (d *Dev) cost(k kind, off, n int64) time.Duration {
	m := &d.m
	c := m.PerOp
	d.mu.Lock()
	if k == kFlush {
		d.mu.Unlock()
		c += m.Flush
		d.charge(c, 0, 0, false, 0)
		return c
	}
	if k == kTruncate {
		// Forget extents wholly past the new end (LD3); growth is sparse.
		first := (off + m.AllocGranularity - 1) / m.AllocGranularity
		for e := range d.extents {
			if e >= first {
				delete(d.extents, e)
			}
		}
		d.mu.Unlock()
		d.charge(c, 0, 0, false, 0)
		return c
	}
	var seek time.Duration
	seeked := off != d.head
	if seeked {
		dist := off - d.head
		if dist < 0 {
			dist = -dist
		}
		seek = m.SeekMin
		if m.SeekDistance > 0 {
			seek += time.Duration(float64(m.SeekTime) * float64(dist) / float64(m.SeekDistance))
		}
		if m.SeekMax > 0 && seek > m.SeekMax {
			seek = m.SeekMax
		}
	}
	d.head = off + n
	var newExt int64
	if (k == kWrite || k == kZero) && n > 0 {
		for e := off / m.AllocGranularity; e <= (off+n-1)/m.AllocGranularity; e++ {
			if _, ok := d.extents[e]; !ok {
				d.extents[e] = struct{}{}
				newExt++
			}
		}
	}
	d.mu.Unlock()
	var alloc time.Duration
	switch k {
	case kWrite:
		alloc = time.Duration(newExt) * m.AllocWrite
	case kZero:
		alloc = time.Duration(newExt) * m.AllocZero
	}
	c += seek + alloc
	if k != kZero && m.Bandwidth > 0 {
		c += time.Duration(float64(n) * float64(time.Second) / float64(m.Bandwidth))
	}
	d.charge(c, seek, alloc, seeked, newExt)
	return c
}

func (d *Dev) charge(c, seek, alloc time.Duration, seeked bool, newExt int64) {
	d.ops.Add(1)
	d.modelled.Add(int64(c))
	d.seek.Add(int64(seek))
	d.alloc.Add(int64(alloc))
	if seeked {
		d.seeks.Add(1)
	}
	d.newExtents.Add(newExt)
}

// service takes a slot (LD1), computes and sleeps the cost, runs fn and
// frees the slot.
func (d *Dev) service(k kind, off, n int64, fn func() error) error {
	if d.slots != nil {
		d.slots <- struct{}{}
		defer func() { <-d.slots }()
	}
	if c := d.cost(k, off, n); c > 0 {
		d.m.Sleep(c)
	}
	return fn()
}

func (d *Dev) Readv(off int64, bufs [][]byte) error {
	return d.service(kRead, off, block.VecLen(bufs), func() error { return d.child.Readv(off, bufs) })
}

func (d *Dev) Writev(off int64, bufs [][]byte) error {
	return d.service(kWrite, off, block.VecLen(bufs), func() error { return d.child.Writev(off, bufs) })
}

func (d *Dev) WriteZeroes(off, n int64, flags block.Flags) error {
	return d.service(kZero, off, n, func() error { return d.child.WriteZeroes(off, n, flags) })
}

// ZeroThenWritev is serviced as a zero op then a write op, each charged;
// it delegates to the child's ZeroThenWritev when there is one.
func (d *Dev) ZeroThenWritev(zoff, zn int64, zflags block.Flags, woff int64, bufs [][]byte) error {
	if zw, ok := d.child.(block.ZeroWriter); ok {
		return d.service(kZero, zoff, zn, func() error {
			c := d.cost(kWrite, woff, block.VecLen(bufs))
			if c > 0 {
				d.m.Sleep(c)
			}
			return zw.ZeroThenWritev(zoff, zn, zflags, woff, bufs)
		})
	}
	if err := d.WriteZeroes(zoff, zn, zflags); err != nil {
		return err
	}
	return d.Writev(woff, bufs)
}

func (d *Dev) Flush() error {
	return d.service(kFlush, 0, 0, d.child.Flush)
}

func (d *Dev) Truncate(size int64) error {
	return d.service(kTruncate, size, 0, func() error { return d.child.Truncate(size) })
}

func (d *Dev) Size() (int64, error) { return d.child.Size() }
func (d *Dev) Close() error         { return d.child.Close() }

// Caps are the child's, with the model's medium.
func (d *Dev) Caps() block.Caps {
	c := d.child.Caps()
	c.Media = d.m.Media
	return c
}
