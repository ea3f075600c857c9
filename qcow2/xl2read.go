package qcow2

import (
	"github.com/qring/qring/qcow2/format"
)

// Reading images with extended L2 entries: a cluster's 32 subclusters
// each have their own state (QEMU's qcow2_get_subcluster_type), so a run
// ends where the subcluster type changes, not at cluster boundaries.

// xrunKind is the run kind of a subcluster type, and whether the run
// carries the host offset (QEMU reports an offset for normal, zero-alloc
// and unallocated-alloc subclusters).
func xrunKind(t format.SubclusterType) (format.ClusterType, bool) {
	switch t {
	case format.SubNormal:
		return format.ClusterNormal, true
	case format.SubZeroPlain:
		return format.ClusterZeroPlain, false
	case format.SubZeroAlloc:
		return format.ClusterZeroAlloc, true
	case format.SubUnallocatedPlain:
		return format.ClusterUnallocated, false
	case format.SubUnallocatedAlloc:
		return format.ClusterUnallocated, true
	case format.SubCompressed:
		return format.ClusterCompressed, false
	}
	return 0, false
}

// xmapRun is mapRun for extended L2 images: [off, off+maxLen) from off up
// to the end of the first run of subclusters of the same type
// (host-contiguous where they have a host offset). off is inside the
// virtual size and maxLen does not cross it. A compressed run ends at
// its cluster's end.
func (im *Image) xmapRun(off format.GuestOff, maxLen uint64) (run, error) {
	g := &im.g
	scs := g.SubclusterSize()
	var r run
	hostRun := false
	// At most 256 clusters per lookup, as mapRun.
	for k := 0; r.length < maxLen && k < 256; k++ {
		pos := off + format.GuestOff(r.length)
		e, bm, err := im.xentryFor(pos, true)
		if err != nil && r.length > 0 && !im.xentryFailsRun(pos, r, hostRun) {
			return r, nil // the run ends before it, as mapRun's
		}
		if err != nil {
			return run{}, err
		}
		in := g.InCluster(pos)
		sc := g.SubIndex(in)
		for sc < format.SubclustersPerCluster && r.length < maxLen {
			t, cnt := format.SubclusterRangeTypeIn(e, bm, sc, im.df.ext)
			if t == format.SubInvalid {
				return run{}, corruptf("l2_bitmap", bm, "invalid subcluster %d of L2 entry %#x", sc, uint64(e))
			}
			kind, hasHost := xrunKind(t)
			var host format.HostOff
			if hasHost {
				host = g.HostFor(e.Offset(), pos)
			}
			if r.length == 0 {
				r.kind, r.entry, r.host, hostRun = kind, e, host, hasHost
			} else if kind != r.kind || kind == format.ClusterCompressed || hasHost != hostRun ||
				(hasHost && host != r.host+format.HostOff(r.length)) {
				return r, nil
			}
			end := uint64(sc+cnt) * scs
			r.length += min(end-in, maxLen-r.length)
			if kind == format.ClusterCompressed {
				return r, nil
			}
			in, sc = end, sc+cnt
			pos = off + format.GuestOff(r.length)
		}
	}
	return r, nil
}

// xentryFailsRun reports whether the unusable entry at pos, met while
// xmapRun extends run r, fails the lookup rather than ending the run, as
// QEMU's count_contiguous_subclusters decides: an entry whose subcluster
// bitmap is invalid fails it where the run would go on into it (its host
// offset continues the run's, or the run has none); any other ends the
// run before it, and the lookup that starts there reports it.
func (im *Image) xentryFailsRun(pos format.GuestOff, r run, hostRun bool) bool {
	t, i, err := im.l2slice(pos)
	if err != nil || t == nil {
		return false
	}
	t.Lock()
	e := im.g.L2At(t.Data, i)
	bm := im.g.BitmapAt(t.Data, i)
	t.Unlock()
	im.l2c.Put(t)
	continues := !hostRun || e.Offset() == r.host+format.HostOff(r.length)
	return continues && format.ValidateBitmapIn(e, bm, im.df.ext) != nil
}
