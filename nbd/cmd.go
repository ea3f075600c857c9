package nbd

import (
	"errors"
	"fmt"

	"github.com/qring/qring/block"
)

// The commands of section "Request types". Each returns the error to
// reply with; read and blockStatus send their own replies.

// write is NBD_CMD_WRITE. With DetectZeroes, an all-zero payload becomes
// a zeroing request (qemu's detect-zeroes), falling back to the write if
// the device cannot zero.
func (c *conn) write(r *request, p []byte) error {
	if c.exp.DetectZeroes != DetectOff && len(p) > 0 && allZero(p) {
		var f block.Flags
		if c.exp.DetectZeroes == DetectUnmap && c.exp.Unmap {
			f = block.MayUnmap & c.exp.Dev.Caps().ZeroFlags
		}
		err := c.exp.Dev.WriteZeroes(int64(r.off), int64(len(p)), f)
		if !errors.Is(err, block.ErrNotSupported) {
			return err
		}
	}
	return block.WriteAt(c.exp.Dev, p, int64(r.off))
}

func allZero(p []byte) bool {
	for len(p) >= 8 {
		if p[0]|p[1]|p[2]|p[3]|p[4]|p[5]|p[6]|p[7] != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// writeZeroes is NBD_CMD_WRITE_ZEROES. The range may be unmapped unless
// NO_HOLE is set, with FAST_ZERO or not (as qemu-nbd: BDRV_REQ_MAY_UNMAP
// goes with BDRV_REQ_NO_FALLBACK), whether the export unmaps TRIM or not:
// qemu-nbd 7.2 frees the clusters under --discard=ignore too. FAST_ZERO
// adds the engine's Allocate: zero efficiently or fail at once with
// ENOTSUP, never fall back to writing zeros (section "Request types",
// NBD_CMD_FLAG_FAST_ZERO). Without it a device that cannot zero gets
// zero buffers written.
func (c *conn) writeZeroes(r *request) error {
	d := c.exp.Dev
	off, n := int64(r.off), int64(r.len)
	if n == 0 {
		return nil
	}
	caps := d.Caps()
	var f block.Flags
	if r.flags&cmdFlagNoHole == 0 {
		f = block.MayUnmap & caps.ZeroFlags
	}
	if r.flags&cmdFlagFastZero != 0 {
		// The spec asks that a refused fast zero leave the contents
		// alone: Allocate never falls back to writing (block.Allocate).
		if caps.ZeroFlags&block.Allocate == 0 {
			return &reqError{errNotSup, "device cannot zero fast"}
		}
		err := d.WriteZeroes(off, n, block.Allocate|f)
		if errors.Is(err, block.ErrNotSupported) {
			return &reqError{errNotSup, err.Error()}
		}
		return err
	}
	err := d.WriteZeroes(off, n, f)
	if !errors.Is(err, block.ErrNotSupported) {
		return err
	}
	// The slow path: write zeros.
	z := getBuf(min(int(n), 1<<20))
	defer putBuf(z)
	clear(z)
	for n > 0 {
		k := min(n, int64(len(z)))
		if err := block.WriteAt(d, z[:k], off); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// trim is NBD_CMD_TRIM: a discard when the export unmaps, else nothing
// (the spec lets a server ignore TRIM; qemu-nbd --discard=ignore does).
func (c *conn) trim(r *request) error {
	if !c.exp.Unmap || r.len == 0 {
		return nil
	}
	off, n := int64(r.off), int64(r.len)
	if d, ok := c.exp.Dev.(Discarder); ok {
		if err := d.Discard(off, n); !errors.Is(err, block.ErrNotSupported) {
			return err
		}
		// A layer that forwards discards over a device that has none
		// (a raw window over a file): unmap by zeroing, as below.
	}
	// TRIM is a hint (section "Request types"): a device that can do
	// neither has done what it could.
	if c.exp.Dev.Caps().ZeroFlags&block.MayUnmap != 0 {
		err := c.exp.Dev.WriteZeroes(off, n, block.MayUnmap)
		if !errors.Is(err, block.ErrNotSupported) {
			return err
		}
	}
	return nil
}

// extent returns the allocation state of a prefix of [off, end) from
// the export's StatusSource, checked: a source that answers nothing or
// too much is clamped, so a bad source cannot loop the server or overrun
// a reply.
func (c *conn) extent(off, end int64) (Extent, error) {
	e := Extent{Len: end - off, Depth: 1}
	if c.status != nil {
		var err error
		if e, err = c.status.Extent(off, end-off); err != nil {
			return e, err
		}
		if e.Len <= 0 {
			return e, fmt.Errorf("nbd: block status at %d: empty extent", off)
		}
		e.Len = min(e.Len, end-off)
	}
	return e, nil
}

// statusExtent is extent for BLOCK_STATUS: with the selected dirty
// bitmaps' states (Extent.Dirty), the allocation looked up only if alloc
// (a context that shows it is selected and still open), as qemu-nbd
// answers each context on its own (a bitmap's where the allocation
// cannot be read).
func (c *conn) statusExtent(off, end int64, alloc bool) (Extent, error) {
	e := Extent{Len: end - off, Depth: 1}
	if alloc {
		var err error
		if e, err = c.extent(off, end); err != nil {
			return e, err
		}
	}
	for _, d := range c.dirty {
		// A dirty bitmap's context: the extent ends where any state
		// changes.
		dirty, n, err := d.src.DirtyRun(off, e.Len)
		if err != nil {
			return e, err
		}
		if n <= 0 {
			return e, fmt.Errorf("nbd: dirty bitmap at %d: empty run", off)
		}
		e.Len = min(e.Len, n)
		if dirty {
			e.Dirty |= 1 << d.bit
		}
	}
	return e, nil
}

// read is NBD_CMD_READ. With structured replies, a device that reports
// allocation and no DF flag, the reply is a run of OFFSET_DATA and
// OFFSET_HOLE chunks, one per extent (holes are not read); otherwise one
// simple reply or one OFFSET_DATA chunk.
func (c *conn) read(r *request) bool {
	off, n := int64(r.off), int64(r.len)
	buf := getBuf(int(n))
	defer putBuf(buf)
	if !c.structured {
		if err := block.ReadAt(c.exp.Dev, buf, off); err != nil {
			c.replyErr(r, err)
			return true
		}
		c.send(simpleHeader(r.cookie, 0), buf)
		return true
	}
	if n == 0 {
		c.send(appendChunk(nil, replyFlagDone, replyNone, r.cookie, 0))
		return true
	}
	if c.status == nil || r.flags&cmdFlagDF != 0 {
		if err := block.ReadAt(c.exp.Dev, buf, off); err != nil {
			c.replyErr(r, err)
			return true
		}
		h := appendChunk(nil, replyFlagDone, replyOffsetData, r.cookie, 8+len(buf))
		c.send(appendU64(h, uint64(off)), buf)
		return true
	}
	// Sparse read: walk the extents, merging neighbours of one kind.
	type piece struct {
		off, n int64
		hole   bool
	}
	var ps []piece
	for pos, end := off, off+n; pos < end; {
		e, err := c.extent(pos, end)
		if err != nil {
			c.replyErr(r, err)
			return true
		}
		if k := len(ps); k > 0 && ps[k-1].hole == e.Zero {
			ps[k-1].n += e.Len
		} else {
			ps = append(ps, piece{pos, e.Len, e.Zero})
		}
		pos += e.Len
	}
	parts := make([][]byte, 0, 2*len(ps))
	var hdrs []byte
	for i, p := range ps {
		var fl uint16
		if i == len(ps)-1 {
			fl = replyFlagDone
		}
		start := len(hdrs)
		if p.hole {
			hdrs = appendChunk(hdrs, fl, replyOffsetHole, r.cookie, 12)
			hdrs = appendU64(hdrs, uint64(p.off))
			hdrs = appendU32(hdrs, uint32(p.n))
			parts = append(parts, hdrs[start:len(hdrs):len(hdrs)])
			continue
		}
		data := buf[p.off-off : p.off-off+p.n]
		if err := block.ReadAt(c.exp.Dev, data, p.off); err != nil {
			c.replyErr(r, err)
			return true
		}
		hdrs = appendChunk(hdrs, fl, replyOffsetData, r.cookie, 8+int(p.n))
		hdrs = appendU64(hdrs, uint64(p.off))
		parts = append(parts, hdrs[start:len(hdrs):len(hdrs)], data)
	}
	// A header slice taken before hdrs grew still points at the old array,
	// whose bytes do not change: every part stays valid.
	c.send(parts...)
	return true
}
