package nbd

import "strings"

// Metadata contexts (section "Metadata querying"). The server offers two,
// and a dirty bitmap's; their ids are fixed for the life of the server,
// and are qemu-nbd's (NBD_META_ID_BASE_ALLOCATION and so on).
const (
	metaBaseAllocation = 0 // "base:allocation"
	metaAllocDepth     = 1 // "qemu:allocation-depth"
	metaDirtyBitmap    = 2 // "qemu:dirty-bitmap:" + Export.Bitmap
)

type metaContext struct {
	id   uint32
	name string
}

var metaContexts = []metaContext{
	{metaBaseAllocation, "base:allocation"},
	{metaAllocDepth, "qemu:allocation-depth"},
}

// contexts are the metadata contexts export e offers: base:allocation,
// qemu:allocation-depth when it offers that, and its dirty bitmap's
// when it has one, in that order (qemu-nbd's).
func (e *Export) contexts() []metaContext {
	all := metaContexts[:1]
	if e.AllocationDepth {
		all = metaContexts
	}
	if e.Bitmap == "" || e.BitmapSource == nil {
		return all
	}
	return append(append([]metaContext(nil), all...), metaContext{metaDirtyBitmap, "qemu:dirty-bitmap:" + e.Bitmap})
}

// metaMatch marks in chosen the contexts of all that query q selects.
// For LIST a query "namespace:" (a namespace with an empty leaf) lists
// the whole namespace, as "qemu:dirty-bitmap:" lists the bitmaps; SET
// only selects by exact name. Unknown names select nothing (the spec
// says the server then just does not reply with a context for them).
func metaMatch(all []metaContext, q string, list bool, chosen []bool) {
	for i, m := range all {
		if m.name == q || list && strings.HasSuffix(q, ":") && strings.HasPrefix(m.name, q) {
			chosen[i] = true
		}
	}
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
