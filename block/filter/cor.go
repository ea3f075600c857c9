package filter

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/qring/qring/block"
)

// Allocator is implemented by a top device that knows which of its ranges
// it holds itself (QEMU's bdrv_is_allocated). Allocated describes a prefix
// of [off, off+n): length bytes (0 < length <= n) that are all allocated
// in the top or all not.
type Allocator interface {
	Allocated(off, n int64) (allocated bool, length int64, err error)
}

// AllocatorDevice is a device that is also an Allocator.
type AllocatorDevice interface {
	block.Device
	Allocator
}

// CORMetrics count copy-on-read work.
type CORMetrics struct {
	CopiedBytes atomic.Int64 // bytes written into the top by reads
	LocalBytes  atomic.Int64 // bytes read from the top's own allocation
}

// CopyOnRead is QEMU's copy-on-read filter: reads of ranges the top does
// not allocate are read from the source and written into the top, so later
// reads are local. Writes go to the top only, and so do discards, as
// QEMU's cor_co_pdiscard forwards them to its file (FL8): a discard holds
// its range's lock like a write, so a copy in flight cannot write older
// source data over it (FL5), and it is block.ErrNotSupported, having done
// nothing, when the top is no block.Discarder. The source is never
// discarded.
//
// With a nil source the unallocated ranges are read through the top
// itself: a qcow2 top whose backing file is the source then just writes
// the data it read back into itself.
type CopyOnRead struct {
	top AllocatorDevice
	src block.Device
	lk  rangeLock
	M   CORMetrics
}

var (
	_ block.Device    = (*CopyOnRead)(nil)
	_ block.Discarder = (*CopyOnRead)(nil)
)

// NewCopyOnRead builds the filter. It owns top and src (FL4); src may be
// nil (see CopyOnRead).
func NewCopyOnRead(top AllocatorDevice, src block.Device) *CopyOnRead {
	return &CopyOnRead{top: top, src: src}
}

// Top returns the top device.
func (c *CopyOnRead) Top() block.Device { return c.top }

func (c *CopyOnRead) Readv(off int64, bufs [][]byte) error {
	n := block.VecLen(bufs)
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	size, err := c.top.Size()
	if err != nil {
		return err
	}
	end := off + n
	if end > size {
		// Past the end reads zeros (B2); nothing there to copy.
		in := max(size-off, 0)
		for _, b := range subVec(bufs, in, n-in) {
			clear(b)
		}
		end = off + in
	}
	for pos := off; pos < end; {
		alloc, l, err := c.top.Allocated(pos, end-pos)
		if err != nil {
			return err
		}
		if l <= 0 {
			return fmt.Errorf("filter: copy-on-read: Allocated(%d, %d) returned length %d", pos, end-pos, l)
		}
		l = min(l, end-pos)
		v := subVec(bufs, pos-off, l)
		if alloc {
			err = c.top.Readv(pos, v)
			c.M.LocalBytes.Add(l)
		} else {
			err = c.fill(pos, l, v)
		}
		if err != nil {
			return err
		}
		pos += l
	}
	return nil
}

// ClusterSizer is implemented by a top that allocates in clusters (a
// qcow2 image's clusters, a VMDK's grains): copy-on-read then copies
// whole clusters, as QEMU rounds each copy out to the top's cluster size
// (bdrv_co_do_copy_on_readv), so a read of part of a cluster leaves the
// whole cluster copied. 0 or less: no rounding.
type ClusterSizer interface {
	ClusterSize() int64
}

// maxBounce bounds one copy's buffer, as QEMU's MAX_BOUNCE_BUFFER does.
const maxBounce = 32 << 20

// fill reads an unallocated range [off, off+n) from the source into v and
// copies it into the top, rounded out to the top's clusters
// (ClusterSizer). It holds the rounded range exclusively and re-checks
// allocation under the lock, so a guest write that landed after the
// first check is not overwritten with older source data (FL5); of the
// rounding, only the parts that are still unallocated are copied.
func (c *CopyOnRead) fill(off, n int64, v [][]byte) error {
	a, b := off, off+n
	if cs, ok := c.top.(ClusterSizer); ok {
		if k := cs.ClusterSize(); k > 1 {
			size, err := c.top.Size()
			if err != nil {
				return err
			}
			a, b = off/k*k, min((off+n+k-1)/k*k, max(size, off+n))
			if lim := max(maxBounce/k*k, k); b-a > lim {
				// Pieces of at most maxBounce stay whole clusters.
				return c.fillPieces(off, n, v, a, lim)
			}
		}
	}
	defer c.lk.lock(a, b-a, true)()
	for pos := a; pos < b; {
		alloc, l, err := c.top.Allocated(pos, b-pos)
		if err != nil {
			return err
		}
		if l <= 0 {
			return fmt.Errorf("filter: copy-on-read: Allocated(%d, %d) returned length %d", pos, b-pos, l)
		}
		l = min(l, b-pos)
		// [lo, hi) is the part of [pos, pos+l) the caller reads.
		lo, hi := max(pos, off), min(pos+l, off+n)
		if alloc {
			if lo < hi {
				if err := c.top.Readv(lo, subVec(v, lo-off, hi-lo)); err != nil {
					return err
				}
			}
			pos += l
			continue
		}
		src := c.src
		if src == nil {
			src = c.top
		}
		data := make([]byte, l)
		if err := block.ReadAt(src, data, pos); err != nil {
			return err
		}
		if lo < hi {
			scatter(subVec(v, lo-off, hi-lo), data[lo-pos:hi-pos])
		}
		// Zeros become a zeroing request: on qcow2 v3 whole clusters turn
		// into zero clusters instead of allocated clusters of zeros.
		if isZero(data) {
			err = c.top.WriteZeroes(pos, l, 0)
		} else {
			err = block.WriteAt(c.top, data, pos)
		}
		if err != nil {
			return fmt.Errorf("filter: copy-on-read: write back [%d, +%d): %w", pos, l, err)
		}
		c.M.CopiedBytes.Add(l)
		pos += l
	}
	return nil
}

// fillPieces is fill of a rounded range longer than lim, from a (the
// rounded start), in pieces of lim bytes (whole clusters).
func (c *CopyOnRead) fillPieces(off, n int64, v [][]byte, a, lim int64) error {
	for p := a; p < off+n; p += lim {
		lo, hi := max(p, off), min(p+lim, off+n)
		if err := c.fill(lo, hi-lo, subVec(v, lo-off, hi-lo)); err != nil {
			return err
		}
	}
	return nil
}

func (c *CopyOnRead) Writev(off int64, bufs [][]byte) error {
	return c.lk.writev(off, bufs, func(int64) error { return c.top.Writev(off, bufs) })
}

func (c *CopyOnRead) WriteZeroes(off, n int64, flags block.Flags) error {
	return c.lk.writeZeroes(c.Caps(), off, n, flags, func() error { return c.top.WriteZeroes(off, n, flags) })
}

// Discard deallocates [off, off+n) of the top (FL8). It holds the range
// exclusively, as QEMU's discard waits for the serialising copy-on-read
// requests it overlaps: a copy that read the source before the discard
// writes back before it, never after (FL5). What the range then reads is
// the top's affair: a qcow2 v3 top reads zeros there; a top that leaves it
// unallocated has later reads copy it from the source again.
func (c *CopyOnRead) Discard(off, n int64) error {
	if err := block.CheckRange(off, n); err != nil {
		return err
	}
	d, ok := c.top.(block.Discarder)
	if !ok {
		return block.ErrNotSupported
	}
	defer c.lk.lock(off, n, true)()
	return d.Discard(off, n)
}

func (c *CopyOnRead) Flush() error              { return c.top.Flush() }
func (c *CopyOnRead) Size() (int64, error)      { return c.top.Size() }
func (c *CopyOnRead) Truncate(size int64) error { return c.top.Truncate(size) }

// Caps are the top's: only the top receives writes (FL1).
func (c *CopyOnRead) Caps() block.Caps { return c.top.Caps() }

func (c *CopyOnRead) Close() error {
	err := c.top.Close()
	if c.src != nil {
		err = errors.Join(err, c.src.Close())
	}
	return err
}
