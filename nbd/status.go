package nbd

import "encoding/binary"

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func appendU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// maxDescriptors bounds the extents of one BLOCK_STATUS chunk: the spec
// lets the server describe less than asked (section "Request types",
// NBD_CMD_BLOCK_STATUS: the reply may cover a prefix of the range), and
// the client asks again from where it ends.
const maxDescriptors = 1 << 16

// blockStatus is NBD_CMD_BLOCK_STATUS: one NBD_REPLY_TYPE_BLOCK_STATUS
// chunk per selected context, the last one with DONE. Each chunk is the
// context id and (length, flags) descriptors; neighbouring extents with
// the same flags in a context merge. With REQ_ONE each context gets one
// descriptor. Descriptors never go past the request's range.
func (c *conn) blockStatus(r *request) bool {
	off, end := int64(r.off), int64(r.off)+int64(r.len)
	type desc struct {
		n     int64
		flags uint32
	}
	ds := make([][]desc, len(c.meta))
	one := r.flags&cmdFlagReqOne != 0
	for pos := off; pos < end; {
		e, err := c.extent(pos, end)
		if err != nil {
			c.replyErr(r, err)
			return true
		}
		full := false
		for i, id := range c.meta {
			f := metaFlags(id, e)
			if k := len(ds[i]); k > 0 && ds[i][k-1].flags == f && ds[i][k-1].n+e.Len <= 1<<32-1<<20 {
				ds[i][k-1].n += e.Len
			} else {
				ds[i] = append(ds[i], desc{e.Len, f})
			}
			full = full || len(ds[i]) >= maxDescriptors
		}
		pos += e.Len
		if one || full {
			break
		}
	}
	parts := make([][]byte, 0, len(c.meta))
	for i, id := range c.meta {
		d := ds[i]
		if one && len(d) > 1 {
			d = d[:1]
		}
		var fl uint16
		if i == len(c.meta)-1 {
			fl = replyFlagDone
		}
		b := appendChunk(nil, fl, replyBlockStatus, r.cookie, 4+8*len(d))
		b = appendU32(b, id)
		for _, x := range d {
			b = appendU32(b, uint32(x.n))
			b = appendU32(b, x.flags)
		}
		parts = append(parts, b)
	}
	c.send(parts...)
	return true
}
