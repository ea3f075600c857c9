package nbd

import (
	"encoding/binary"
	"strings"
)

// Metadata contexts (section "Metadata querying"). The server offers two;
// their ids are fixed for the life of the server.
const (
	metaBaseAllocation = 1 // "base:allocation"
	metaAllocDepth     = 2 // "qemu:allocation-depth"
	metaDirtyBitmap    = 3 // "qemu:dirty-bitmap:" + Export.Bitmap
)

type metaContext struct {
	id   uint32
	name string
}

var metaContexts = []metaContext{
	{metaBaseAllocation, "base:allocation"},
	{metaAllocDepth, "qemu:allocation-depth"},
}

// contexts are the metadata contexts export e offers: metaContexts, and
// its dirty bitmap's when it has one.
func (e *Export) contexts() []metaContext {
	if e.Bitmap == "" || e.BitmapSource == nil {
		return metaContexts
	}
	return append(append([]metaContext(nil), metaContexts...), metaContext{metaDirtyBitmap, "qemu:dirty-bitmap:" + e.Bitmap})
}

// metaMatch returns the contexts of all that a query selects. For LIST a
// query "namespace:" (a namespace with an empty leaf) lists the whole
// namespace; SET only selects by exact name. Unknown names select nothing
// (the spec says the server then just does not reply with a context for
// them).
func metaMatch(all []metaContext, q string, list bool) []metaContext {
	var out []metaContext
	for _, m := range all {
		if m.name == q {
			out = append(out, m)
			continue
		}
		if list && strings.HasSuffix(q, ":") && strings.HasPrefix(m.name, q) {
			out = append(out, m)
		}
	}
	return out
}

// metaRequest is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT: an export name and a list of queries.
type metaRequest struct {
	export  string
	queries []string
}

// parseMetaRequest decodes the option data; ok is false when the lengths
// do not add up exactly or a string is too long (NBD_REP_ERR_INVALID).
func parseMetaRequest(b []byte) (metaRequest, bool) {
	var r metaRequest
	name, b, ok := takeString32(b)
	if !ok {
		return r, false
	}
	r.export = name
	if len(b) < 4 {
		return r, false
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	// Each query takes at least its 4-byte length.
	if uint64(n)*4 > uint64(len(b)) {
		return r, false
	}
	for range n {
		var q string
		if q, b, ok = takeString32(b); !ok {
			return r, false
		}
		r.queries = append(r.queries, q)
	}
	return r, len(b) == 0
}

// takeString32 takes a 32-bit length and that many bytes of string.
func takeString32(b []byte) (string, []byte, bool) {
	if len(b) < 4 {
		return "", b, false
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if n > maxString || uint64(n) > uint64(len(b)) {
		return "", b, false
	}
	return string(b[:n]), b[n:], true
}

// metaFlags is the status word of e in context id: base:allocation's
// NBD_STATE_HOLE and NBD_STATE_ZERO bits, or the depth for
// qemu:allocation-depth.
func metaFlags(id uint32, e Extent) uint32 {
	switch id {
	case metaAllocDepth:
		return uint32(e.Depth)
	case metaDirtyBitmap:
		if e.Dirty {
			return 1
		}
		return 0
	}
	var f uint32
	if e.Hole {
		f |= StateHole
	}
	if e.Zero {
		f |= StateZero
	}
	return f
}
