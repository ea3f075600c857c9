package block

// Cursor walks a vector of buffers in order: Next returns the next n
// bytes of the vector as sub-slices of its buffers (no copy), reusing
// the Cursor's own storage, so a result is valid until the next call.
// A format device that splits one request among its clusters, grains or
// blocks takes each piece's buffers from it.
type Cursor struct {
	bi, bo int
	sub    [][]byte
}

// Next returns the next n bytes of bufs, which must be the vector the
// Cursor walked so far and hold n more bytes.
func (c *Cursor) Next(bufs [][]byte, n int64) [][]byte {
	c.sub = c.sub[:0]
	for n > 0 {
		b := bufs[c.bi][c.bo:]
		if int64(len(b)) > n {
			b = b[:n]
		}
		c.sub = append(c.sub, b)
		n -= int64(len(b))
		c.bo += len(b)
		if c.bo == len(bufs[c.bi]) {
			c.bi, c.bo = c.bi+1, 0
		}
	}
	return c.sub
}

// ErrNoResize is a format driver's refusal to resize an image, in
// QEMU's words (the vpc and vmdk drivers cannot resize); it matches
// ErrNotSupported.
var ErrNoResize error = noResize{}

type noResize struct{}

func (noResize) Error() string { return "Image format driver does not support resize" }
func (noResize) Unwrap() error { return ErrNotSupported }
