package nbd

import "encoding/binary"

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// maxDescriptors bounds the extents of one BLOCK_STATUS chunk: the spec
// lets the server describe less than asked (section "Request types",
// NBD_CMD_BLOCK_STATUS: the reply may cover a prefix of the range), and
// the client asks again from where it ends.
const maxDescriptors = 1 << 16

// maxMerged bounds a descriptor merged from neighbouring extents, well
// under the 32-bit length field.
const maxMerged = 1<<32 - 1<<20

// statusCost is what a BLOCK_STATUS reply to r may hold in memory: per
// selected context a chunk header and up to statusDescriptors descriptors
// of 8 bytes, no more than one per byte of the range, one with REQ_ONE;
// counted twice, for the slack of a growing slice. The reader takes it
// from the connection's budget like a READ's buffer (conn.transmit), so
// a client that sends status requests without reading the replies stops
// being read instead of growing the server's memory.
func (c *conn) statusCost(r *request) int64 {
	d := int64(min(r.len, uint32(c.statusDescriptors())))
	if r.flags&cmdFlagReqOne != 0 {
		d = 1
	}
	return int64(len(c.meta)) * 2 * (20 + 4 + 8*d)
}

// statusDescriptors bounds the descriptors of each chunk of a
// BLOCK_STATUS reply: maxDescriptors, fewer when so many contexts are
// selected (dirty bitmaps: up to MaxBitmaps of them) that the reply's
// worst case (statusCost) would not fit the smallest budget a connection
// has (MaxPayload). A request that costs more than the whole budget
// would wait for it for ever: the reader stopped, and with it the
// connection and Server.Shutdown.
func (c *conn) statusDescriptors() int {
	per := MaxPayload / int64(2*max(1, len(c.meta))) // a context's share of the cost
	return int(max(1, min(maxDescriptors, (per-20-4)/8)))
}

// blockStatus is NBD_CMD_BLOCK_STATUS: one NBD_REPLY_TYPE_BLOCK_STATUS
// chunk per selected context, the last one with DONE. Each chunk is the
// context id and (length, flags) descriptors; neighbouring extents with
// the same flags in a context merge. With REQ_ONE each context gets one
// descriptor, as long as its flags go on. Descriptors never go past the request's range. The chunks
// are encoded as the extents come, so a reply holds no more than its
// wire size (statusCost).
func (c *conn) blockStatus(r *request) bool {
	off, end := int64(r.off), int64(r.off)+int64(r.len)
	type ctx struct {
		b     []byte // the chunk: header, context id, descriptors
		n     int64  // length of the last descriptor
		flags uint32 // its flags
		count int    // descriptors
	}
	cs := make([]ctx, len(c.meta))
	for i, id := range c.meta {
		var fl uint16
		if i == len(c.meta)-1 {
			fl = replyFlagDone
		}
		cs[i].b = appendU32(appendChunk(nil, fl, replyBlockStatus, r.cookie, 0), id)
	}
	// With REQ_ONE each context's one descriptor still grows while the
	// extents that follow have its flags, each context on its own, as
	// qemu-nbd's (its extent arrays of one); shut counts the contexts
	// whose descriptor ended.
	one := r.flags&cmdFlagReqOne != 0
	most := c.statusDescriptors()
	ended := make([]bool, len(cs))
	shut := 0
	for pos := off; pos < end; {
		alloc := false // a selected context that shows the allocation is open
		for i, id := range c.meta {
			alloc = alloc || id < metaDirtyBitmap && !ended[i]
		}
		e, err := c.statusExtent(pos, end, alloc)
		if err != nil {
			c.replyErr(r, err)
			return true
		}
		full := false
		for i, id := range c.meta {
			x := &cs[i]
			if ended[i] {
				continue
			}
			f := metaFlags(id, e)
			switch {
			case x.count > 0 && x.flags == f && x.n+e.Len <= maxMerged:
				x.n += e.Len
				binary.BigEndian.PutUint32(x.b[len(x.b)-8:], uint32(x.n))
			case one && x.count > 0:
				ended[i] = true
				shut++
			default:
				x.b = appendU32(appendU32(x.b, uint32(e.Len)), f)
				x.n, x.flags = e.Len, f
				x.count++
			}
			full = full || x.count >= most
		}
		pos += e.Len
		if full || one && shut == len(cs) {
			break
		}
	}
	parts := make([][]byte, len(cs))
	for i := range cs {
		b := cs[i].b
		binary.BigEndian.PutUint32(b[16:], uint32(len(b)-20)) // the chunk's length
		parts[i] = b
	}
	c.send(parts...)
	return true
}
