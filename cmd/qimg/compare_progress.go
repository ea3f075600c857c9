package main

// compareIOBuf is qemu-img compare's IO_BUF_SIZE: the most it reads of
// a run at once, and so the longest step of its progress over data.
const compareIOBuf = 2 << 20

// compareProgress prints qemu-img compare -p's progress lines
// (img_compare, min_skip 2): after each chunk it got through, the
// chunk's share of the larger image's size. A chunk is what
// bdrv_block_status_above gives both images at its start (the shorter),
// cut to 2 MiB unless both read as zeros; the chunk where a mismatch
// lies is not counted.
type compareProgress struct {
	p    *qemuProgress
	base int64 // the larger size
}

func newCompareProgress(p *qemuProgress, a, b *image) *compareProgress {
	return &compareProgress{p: p, base: max(a.size, b.size)}
}

func (c *compareProgress) step(chunk int64) {
	c.p.print(float32(chunk)/float32(c.base)*100, 100)
}

// common prints the steps over the part both images have, up to stop
// (the end of that part, or the offset of a mismatch).
func (c *compareProgress) common(a, b *image, stop int64) error {
	for off := int64(0); off < min(a.size, b.size); {
		sa, err := a.st.Status(off, a.size-off)
		if err != nil {
			return err
		}
		sb, err := b.st.Status(off, b.size-off)
		if err != nil {
			return err
		}
		chunk := min(sa.Len, sb.Len)
		if chunk <= 0 {
			return nil // never expected; a hang is worse than fewer lines
		}
		if !sa.Zero || !sb.Zero {
			chunk = min(chunk, compareIOBuf)
		}
		if off+chunk > stop {
			return nil
		}
		off += chunk
		c.step(chunk)
	}
	return nil
}

// tail prints the steps over the part only big has, from where the
// other ends up to stop (big's end, or the offset of data there).
func (c *compareProgress) tail(big *image, from, stop int64) error {
	for off := from; off < big.size; {
		s, err := big.st.Status(off, big.size-off)
		if err != nil {
			return err
		}
		chunk := s.Len
		if chunk <= 0 {
			return nil
		}
		if s.Allocated && !s.Zero {
			chunk = min(chunk, compareIOBuf)
		}
		if off+chunk > stop {
			return nil
		}
		off += chunk
		c.step(chunk)
	}
	return nil
}
