package nbd

// Requests under a server's minimum block size (section "Block size
// constraints"): a client that asked for NBD_INFO_BLOCK_SIZE, as this
// one does (goOption), MUST keep every request's offset and length
// multiples of the minimum. A caller's unaligned range is split, as
// QEMU's block layer splits it for its nbd driver (request_alignment is
// the server's minimum: bdrv_co_preadv_part pads reads,
// bdrv_co_do_zero_pwritev and bdrv_padding_rmw_read pad writes): the
// aligned middle goes as it is, a partial block at either edge is read
// whole, and for a write patched and written back. Writes to the same
// block must not interleave with that (a write between the read and the
// write back would be undone), so a read-modify-write holds Client.rmw
// exclusively and every other write shares it; with a minimum of 1 (no
// constraint) nothing is split and nothing locked.

// align is the request alignment: the server's minimum block size, 1
// when it gave none.
func (c *Client) align() int64 { return max(int64(c.minBlock), 1) }

func (c *Client) aligned(off, n int64) bool {
	a := c.align()
	return off%a == 0 && n%a == 0
}

func alignDown(v, a int64) int64 { return v - v%a }

func alignUp(v, a int64) int64 { return alignDown(v+a-1, a) }

// readAligned reads [off, off+n) into bufs (n bytes, inside the
// export), the partial blocks at its edges through a block's buffer.
func (c *Client) readAligned(off, n int64, bufs [][]byte) error {
	if c.aligned(off, n) {
		return c.readChunks(off, n, bufs)
	}
	var blk []byte
	return c.splitAligned(off, n, func(p, at, m int64) error {
		return c.readChunks(p, m, subVec(bufs, at, m))
	}, func(b, p, at, m int64) error {
		if blk == nil {
			blk = make([]byte, c.align())
		}
		if err := c.readChunks(b, int64(len(blk)), [][]byte{blk}); err != nil {
			return err
		}
		copyToVec(bufs, at, blk[p-b:p-b+m])
		return nil
	})
}

// writeAligned writes [off, off+n) (inside the export): whole blocks
// with whole(p, at, m), for [p, p+m) at byte at of the range, and a
// partial block at an edge by reading it, patching its bytes of the
// range with patch(at, bytes) and writing it back whole.
func (c *Client) writeAligned(off, n int64, patch func(at int64, b []byte), whole func(p, at, m int64) error) error {
	a := c.align()
	if c.aligned(off, n) {
		if a > 1 {
			c.rmw.RLock()
			defer c.rmw.RUnlock()
		}
		return whole(off, 0, n)
	}
	c.rmw.Lock()
	defer c.rmw.Unlock()
	var blk []byte
	return c.splitAligned(off, n, whole, func(b, p, at, m int64) error {
		if blk == nil {
			blk = make([]byte, a)
		}
		if err := c.readChunks(b, a, [][]byte{blk}); err != nil {
			return err
		}
		patch(at, blk[p-b:p-b+m])
		return c.writeChunks(b, a, [][]byte{blk})
	})
}

// splitAligned walks [off, off+n): whole(p, at, m) for each run of
// whole blocks [p, p+m) at byte at of the range, and edge(b, p, at, m)
// for the range's m bytes at p inside the partial block at b.
func (c *Client) splitAligned(off, n int64, whole func(p, at, m int64) error, edge func(b, p, at, m int64) error) error {
	a := c.align()
	for at := int64(0); at < n; {
		p := off + at
		if p%a == 0 && n-at >= a {
			m := alignDown(n-at, a)
			if err := whole(p, at, m); err != nil {
				return err
			}
			at += m
			continue
		}
		b := alignDown(p, a)
		m := min(b+a-p, n-at)
		if err := edge(b, p, at, m); err != nil {
			return err
		}
		at += m
	}
	return nil
}

// copyToVec copies src into bufs from offset at.
func copyToVec(bufs [][]byte, at int64, src []byte) {
	for _, b := range subVec(bufs, at, int64(len(src))) {
		src = src[copy(b, src):]
	}
}

// copyFromVec fills dst from bufs' bytes from offset at.
func copyFromVec(dst []byte, bufs [][]byte, at int64) {
	for _, b := range subVec(bufs, at, int64(len(dst))) {
		dst = dst[copy(dst, b):]
	}
}
