package nbd

import "strings"

// Metadata contexts (section "Metadata querying"). The server offers two,
// and the dirty bitmaps'; their ids are fixed for the life of the server,
// and are qemu-nbd's (NBD_META_ID_BASE_ALLOCATION and so on).
const (
	metaBaseAllocation = 0 // "base:allocation"
	metaAllocDepth     = 1 // "qemu:allocation-depth"
	metaDirtyBitmap    = 2 // on: "qemu:dirty-bitmap:" + Export.Bitmaps[id-2].Name
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
// qemu:allocation-depth when it offers that, and its dirty bitmaps', in
// that order (qemu-nbd's).
func (e *Export) contexts() []metaContext {
	all := metaContexts[:1]
	if e.AllocationDepth {
		all = metaContexts
	}
	all = append([]metaContext(nil), all...)
	for i, b := range e.Bitmaps[:min(len(e.Bitmaps), MaxBitmaps)] {
		if b.Source != nil {
			all = append(all, metaContext{metaDirtyBitmap + uint32(i), "qemu:dirty-bitmap:" + b.Name})
		}
	}
	return all
}

// metaMatch marks in chosen the contexts of all that query q selects.
// For LIST a query "namespace:" (a namespace with an empty leaf) lists
// the whole namespace, as "qemu:dirty-bitmap:" lists the bitmaps; SET
// only selects by exact name, and a name selects the first context of
// that name (an export may offer a bitmap twice: qemu-nbd -B b -B b),
// as qemu-nbd's. Unknown names select nothing (the spec says the server
// then just does not reply with a context for them).
func metaMatch(all []metaContext, q string, list bool, chosen []bool) {
	for i, m := range all {
		if list && strings.HasSuffix(q, ":") && strings.HasPrefix(m.name, q) {
			chosen[i] = true
		} else if m.name == q {
			chosen[i] = true
			return
		}
	}
}

// metaFlags is the status word of e in context id: base:allocation's
// NBD_STATE_HOLE and NBD_STATE_ZERO bits, or the depth for
// qemu:allocation-depth.
func metaFlags(id uint32, e Extent) uint32 {
	switch {
	case id == metaAllocDepth:
		return uint32(e.Depth)
	case id >= metaDirtyBitmap:
		return uint32(e.Dirty >> (id - metaDirtyBitmap) & 1)
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
