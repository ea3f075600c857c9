package qcow2

import (
	"sync"

	"github.com/qring/qring/qcow2/format"
)

// Metadata overlap checks (QEMU's qcow2_check_metadata_overlap with the
// cached template): before a new cluster is handed out and before a
// cached table is written back, make sure the write cannot land on the
// header, the L1 or refcount tables, a refcount block, the bitmap
// directory or an L2 table of another role. A hit means the refcounts
// are corrupt: the image is marked corrupt instead of being damaged
// (Q9).

type metaKind uint8

const (
	metaL2 metaKind = iota + 1
	metaRefblock
)

type metaSet struct {
	mu sync.RWMutex        // read on every in-place overwrite, written rarely
	m  map[uint64]metaKind // host cluster index -> role
}

func (s *metaSet) set(c uint64, k metaKind) {
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[uint64]metaKind)
	}
	s.m[c] = k
	s.mu.Unlock()
}

func (s *metaSet) del(c uint64) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// reset forgets every role.
func (s *metaSet) reset() {
	s.mu.Lock()
	s.m = nil
	s.mu.Unlock()
}

func (s *metaSet) get(c uint64) metaKind {
	s.mu.RLock()
	k := s.m[c]
	s.mu.RUnlock()
	return k
}

// staticOverlap names the fixed metadata range [off, off+n) overlaps, or
// returns "".
func (im *Image) staticOverlap(o format.HostOff, n uint64) string {
	cs := im.g.ClusterSize
	off := uint64(o)
	in := func(a, l uint64) bool { return l > 0 && off < a+l && a < off+n }
	switch {
	case in(0, cs):
		return "header"
	case in(im.l1Off.Load(), im.l1Len.Load()):
		return "active L1 table"
	case in(im.rtOff.Load(), im.rtLen.Load()):
		return "refcount table"
	case in(im.snapOff.Load(), im.snapLen.Load()):
		return "snapshot table"
	case im.cryptoAreaOverlap(off, n):
		return "encryption header"
	}
	for _, s := range im.publishedSnapshots() {
		if in(uint64(s.L1TableOffset), uint64(s.L1Size)*8) {
			return "snapshot L1 table"
		}
	}
	return ""
}

// inactiveL2Overlap names the metadata an inactive (a snapshot's) L2
// table slice at [off, off+n) overlaps, or returns "": checked before
// such a slice is written in place, which the cache's write-back hooks
// do not see (they take active tables only). As QEMU's overlap check
// before such a write, other L2 tables do not count; the fixed tables,
// the bitmap directory and an in-use refcount block do.
func (im *Image) inactiveL2Overlap(off format.HostOff, n uint64) string {
	if what := im.staticOverlap(off, n); what != "" {
		return what
	}
	if im.meta.get(im.g.HostCluster(off)) == metaRefblock {
		return "refcount block"
	}
	if data := im.bitmapsExt(); data != nil {
		// Its clusters, as the header extension names them (a
		// directory that does not parse names none).
		if ext, err := format.ParseBitmapsExt(data); err == nil && ext.DirSize > 0 {
			cs := im.g.ClusterSize
			start := uint64(ext.DirOffset) &^ (cs - 1)
			if uint64(off) < uint64(ext.DirOffset)+ext.DirSize && start < uint64(off)+n {
				return "bitmap directory"
			}
		}
	}
	return ""
}

// overlapCheckStatic runs at open: the tables we know must not overlap
// each other, and the metadata set is built. Each overlap goes to bad,
// with refcounts set when rebuilding the refcount structures cures it:
// a refcount table entry naming a table the header names is the broken
// side for sure. Where either side may be (two tables the header names,
// an L1 entry and a refcount table entry naming one cluster), a rebuild
// would keep whichever is garbage, so it is not offered. bad's error,
// if any, stops the check. A table that overlaps gets no role.
func (im *Image) overlapCheckStatic(bad func(err error, refcounts bool) error) error {
	cs := im.g.ClusterSize
	l1 := im.l1.Load()
	if what := im.staticOverlapExcept(im.hdr.L1TableOffset, l1.size()*format.TableEntrySize, "active L1 table"); what != "" {
		if err := bad(corruptf("l1_table_offset", uint64(im.hdr.L1TableOffset), "L1 table overlaps the %s", what), false); err != nil {
			return err
		}
	}
	if what := im.staticOverlapExcept(im.hdr.RefcountTableOffset, uint64(im.hdr.RefcountTableClusters)*cs, "refcount table"); what != "" {
		if err := bad(corruptf("refcount_table_offset", uint64(im.hdr.RefcountTableOffset), "refcount table overlaps the %s", what), false); err != nil {
			return err
		}
	}
	// The snapshot table and the snapshots' L1 tables must not overlap
	// the header, the active L1 table or the refcount table either: a
	// snapshot change frees the old table's clusters (Q19).
	if n := im.snapLen.Load(); n > 0 {
		if what := im.staticOverlapExcept(format.HostOff(im.snapOff.Load()), n, ""); what != "" {
			if err := bad(corruptf("snapshots_offset", im.snapOff.Load(), "snapshot table overlaps the %s", what), false); err != nil {
				return err
			}
		}
	}
	for _, sn := range im.snapshots {
		if sn.L1Size == 0 {
			continue // no table, wherever it says it is (as QEMU's check)
		}
		if what := im.staticOverlapExcept(sn.L1TableOffset, uint64(sn.L1Size)*format.TableEntrySize, ""); what != "" {
			if err := bad(corruptf("snapshot_l1_table_offset", uint64(sn.L1TableOffset), "L1 table of snapshot %s overlaps the %s", sn.ID, what), false); err != nil {
				return err
			}
		}
	}
	for i, v := range im.reftable {
		if v == 0 {
			continue
		}
		if what := im.staticOverlap(v, cs); what != "" {
			if err := bad(corruptf("refcount_table_entry", uint64(v), "refcount block %d overlaps the %s", i, what), true); err != nil {
				return err
			}
			continue
		}
		im.meta.set(im.g.HostCluster(v), metaRefblock)
	}
	for i := range l1.size() {
		e := l1.load(i)
		off := e.Offset()
		if off == 0 {
			continue
		}
		if what := im.staticOverlap(off, cs); what != "" {
			if err := bad(corruptf("l1_entry", uint64(e), "L2 table %d overlaps the %s", i, what), false); err != nil {
				return err
			}
			continue
		}
		if im.meta.get(im.g.HostCluster(off)) == metaRefblock {
			if err := bad(corruptf("l1_entry", uint64(e), "L2 table %d overlaps a refcount block", i), false); err != nil {
				return err
			}
			continue
		}
		im.meta.set(im.g.HostCluster(off), metaL2)
	}
	return nil
}

func (im *Image) staticOverlapExcept(o format.HostOff, n uint64, self string) string {
	cs := im.g.ClusterSize
	off := uint64(o)
	in := func(a, l uint64) bool { return l > 0 && off < a+l && a < off+n }
	if self != "header" && in(0, cs) {
		return "header"
	}
	if self != "active L1 table" && in(uint64(im.hdr.L1TableOffset), im.l1.Load().size()*format.TableEntrySize) {
		return "active L1 table"
	}
	if self != "refcount table" && in(uint64(im.hdr.RefcountTableOffset), uint64(im.hdr.RefcountTableClusters)*cs) {
		return "refcount table"
	}
	return ""
}

// bitmapDirOverlap reports whether [off, off+n) overlaps the clusters
// of the directory of the bitmaps the image maintains (QEMU's overlap
// checks cover it, QCOW2_OL_BITMAP_DIRECTORY). Lock-free: one load.
func (im *Image) bitmapDirOverlap(off format.HostOff, n uint64) bool {
	set := im.bitmaps.Load()
	if set == nil || set.ext.DirSize == 0 {
		return false
	}
	start := uint64(set.ext.DirOffset) &^ (im.g.ClusterSize - 1)
	return uint64(off) < uint64(set.ext.DirOffset)+set.ext.DirSize && start < uint64(off)+n
}

// overlapCheckNew: newly allocated clusters must not hold metadata.
func (im *Image) overlapCheckNew(off format.HostOff, n uint64) error {
	g := &im.g
	what := im.staticOverlap(off, n)
	if what == "" && im.bitmapDirOverlap(off, n) {
		what = "bitmap directory"
	}
	if what != "" {
		return im.markCorrupt(corruptf("refcount", g.HostCluster(off), "allocation at %#x overlaps the %s", uint64(off), what))
	}
	for c := g.HostCluster(off); c < g.HostCluster(off+format.HostOff(n)); c++ {
		if k := im.meta.get(c); k != 0 {
			return im.markCorrupt(corruptf("refcount", c, "allocation at %#x overlaps an in-use %s", uint64(g.HostClusterOff(c)), kindName(k)))
		}
	}
	return nil
}

func kindName(k metaKind) string {
	if k == metaL2 {
		return "L2 table"
	}
	return "refcount block"
}

// overlapCheckL2Write is the L2 cache's write-back hook.
func (im *Image) overlapCheckL2Write(off int64, _ []byte) error {
	c := im.g.HostCluster(format.HostOff(off))
	if k := im.meta.get(c); k != metaL2 {
		return corruptf("l2_table", uint64(off), "write-back of an L2 table to a cluster that is not an active L2 table")
	}
	return nil
}

// overlapCheckRefblockWrite is the refcount cache's write-back hook.
func (im *Image) overlapCheckRefblockWrite(off int64, _ []byte) error {
	c := im.g.HostCluster(format.HostOff(off))
	if k := im.meta.get(c); k != metaRefblock {
		return corruptf("refcount_block", uint64(off), "write-back of a refcount block to a cluster that is not a refcount block")
	}
	return nil
}

// overlapCheckData: an existing data cluster about to be overwritten in
// place must lie inside the file and hold no metadata. Lock-free; the
// caller marks the image corrupt on error.
func (im *Image) overlapCheckData(off format.HostOff) error {
	cs := im.g.ClusterSize
	v := uint64(off)
	if v+cs > im.space.hwm.Load() {
		return corruptf("l2_entry", v, "data cluster at %#x lies past the end of the file", v)
	}
	if what := im.staticOverlap(off, cs); what != "" {
		return corruptf("l2_entry", v, "data cluster at %#x overlaps the %s", v, what)
	}
	if im.bitmapDirOverlap(off, cs) {
		return corruptf("l2_entry", v, "data cluster at %#x overlaps the bitmap directory", v)
	}
	if k := im.meta.get(im.g.HostCluster(off)); k != 0 {
		return corruptf("l2_entry", v, "data cluster at %#x overlaps an in-use %s", v, kindName(k))
	}
	return nil
}
