package nbd

import "encoding/binary"

// Replies. Every request gets exactly one reply (one call of send): a
// simple reply (section "Simple reply message"), or once structured
// replies are negotiated, for READ and BLOCK_STATUS and for every error,
// a series of chunks the last of which has NBD_REPLY_FLAG_DONE (section
// "Structured reply chunk message"). A reply goes out whole under the connection's write
// lock, so replies of concurrent requests never interleave.

// send writes the parts of one reply. The buffered writer is flushed
// unless another reply is already waiting for the lock (that one flushes
// after it), so replies completing together share a write system call
// and no reply waits for a request still running.
func (c *conn) send(parts ...[]byte) {
	c.writers.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.boundWrite()
	if c.werr == nil {
		for _, p := range parts {
			if _, err := c.w.Write(p); err != nil {
				c.werr = err
				break
			}
		}
	}
	c.unflushed++
	if (c.writers.Add(-1) == 0 || c.unflushed >= maxBatch) && c.werr == nil {
		c.werr = c.w.Flush()
		c.unflushed = 0
	}
	if c.werr != nil {
		// The client is gone or the stream is broken: stop the reader
		// too, so the connection winds down.
		c.raw.Close()
	}
}

// maxBatch bounds how many replies wait in the buffer for a flush while
// more keep coming: without it, a steady stream of completions could keep
// the first replies of a batch from the client indefinitely.
const maxBatch = 8

// simpleHeader is the 16-byte simple reply.
func simpleHeader(cookie uint64, code uint32) []byte {
	return appendSimple(make([]byte, 0, 16), cookie, code)
}

// appendSimple appends a simple reply to b.
func appendSimple(b []byte, cookie uint64, code uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, magicSimple)
	b = binary.BigEndian.AppendUint32(b, code)
	return binary.BigEndian.AppendUint64(b, cookie)
}

// appendChunk appends a 20-byte chunk header announcing n payload bytes.
func appendChunk(b []byte, flags, typ uint16, cookie uint64, n int) []byte {
	b = binary.BigEndian.AppendUint32(b, magicStruct)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, cookie)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// errorChunk is an NBD_REPLY_TYPE_ERROR chunk with DONE: the error value
// and a message (section "Structured reply types").
func errorChunk(cookie uint64, code uint32, msg string) []byte {
	if len(msg) > maxString {
		msg = msg[:maxString]
	}
	b := appendChunk(nil, replyFlagDone, replyError, cookie, 6+len(msg))
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// replyErr answers r with err: a simple reply, or once structured
// replies are negotiated an error chunk, whose message tells the client
// what went wrong (qemu-nbd does the same).
func (c *conn) replyErr(r *request, err error) {
	code := codeOf(err)
	c.srv.debugf("nbd: %s: %s [%d, +%d): error %d: %v", c.raw.RemoteAddr(), cmdName(r.typ), r.off, r.len, code, err)
	c.send(simpleOrChunkErr(c, r, code, err.Error()))
}

// replyOK answers r with success and no data.
func (c *conn) replyOK(r *request) {
	c.send(simpleHeader(r.cookie, 0))
}
