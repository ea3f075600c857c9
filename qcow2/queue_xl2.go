package qcow2

import "github.com/qring/qring/qcow2/format"

// A Queue's fast path on images with extended L2 entries (Q14): a request
// inside one cluster whose subclusters all have one state needs no
// metadata change, so it goes to the device's queue as on other images
// (a write: xallAllocated, the synchronous overwrite's own test). A
// write inside one cluster into a subcluster that is not allocated yet
// goes to the queue's allocator (Q16, queue_alloc.go); everything else
// (a request across clusters, a read across subcluster states or of a
// compressed cluster) runs the synchronous path.

// xpeekRun is peekRun for extended L2 images: ok when [off, off+n) lies
// in one cluster and its subclusters have one type (SubclusterRangeType)
// that maps to a run kind.
func (q *Queue) xpeekRun(off, n int64) (kind format.ClusterType, host format.HostOff, ok bool) {
	im := q.im
	g := &im.g
	goff := guestOff(off)
	if g.InCluster(goff)+uint64(n) > g.ClusterSize {
		return 0, 0, false
	}
	e, bm, ok := im.peekXEntry(goff)
	if !ok {
		return 0, 0, false
	}
	first, last := im.xsubRange(goff, n)
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
