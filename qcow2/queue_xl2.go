package qcow2

import "github.com/qring/qring/qcow2/format"

// A Queue's fast path on images with extended L2 entries (Q14): a request
// inside one cluster whose subclusters all have one state needs no
// metadata change, so it goes to the device's queue as on other images.
// Everything else (a request across clusters or subcluster states, a
// write into a subcluster that is not allocated yet, compressed
// clusters) runs the synchronous path.

// xpeekRun is peekRun for extended L2 images: ok when [off, off+n) lies
// in one cluster and its subclusters have one type (SubclusterRangeType)
// that maps to a run kind.
func (q *Queue) xpeekRun(off, n int64) (kind format.ClusterType, host format.HostOff, ok bool) {
	im := q.im
	g := &im.g
	in := uint64(off) & g.ClusterMask
	if in+uint64(n) > g.ClusterSize {
		return 0, 0, false
	}
	goff := guestOff(off)
	e, bm, ok := im.peekXEntry(goff)
	if !ok {
		return 0, 0, false
	}
	first, last := g.SubIndex(in), g.SubIndex(in+uint64(n)-1)
	t, cnt := format.SubclusterRangeType(e, bm, first)
	if first+cnt <= last {
		return 0, 0, false
	}
	kind, _ = xrunKind(t)
	switch {
	case t == format.SubInvalid || kind == format.ClusterCompressed:
		return 0, 0, false
	case kind == format.ClusterNormal:
		host = g.HostFor(e.Offset(), goff)
	}
	return kind, host, true
}

// xallocated reports whether every subcluster of [off, off+n) (inside one
// cluster) is allocated in the extended entry (e, bm): a write there
// changes data only.
func (q *Queue) xallocated(e format.L2Entry, bm uint64, off, n int64) bool {
	g := &q.im.g
	in := uint64(off) & g.ClusterMask
	first, last := g.SubIndex(in), g.SubIndex(in+uint64(n)-1)
	t, cnt := format.SubclusterRangeType(e, bm, first)
	return t == format.SubNormal && first+cnt > last
}
