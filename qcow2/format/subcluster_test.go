package format

import (
	"bytes"
	"testing"
)

// TestSubcluster_Geometry: extended L2 entries are 16 bytes, an L2 table
// holds cluster_size/16 of them, and a cluster has 32 subclusters.
func TestSubcluster_Geometry(t *testing.T) {
	for cb := uint32(14); cb <= MaxClusterBits; cb++ {
		g := NewGeometry(cb, 4, true)
		if g.L2EntrySize != 16 || g.L2Entries != g.ClusterSize/16 || g.Subclusters() != 32 ||
			g.SubclusterSize() != g.ClusterSize/32 || uint64(1)<<g.SubclusterBits() != g.SubclusterSize() {
			t.Fatalf("cluster_bits %d: %+v", cb, g)
		}
		if g.SubIndex(g.SubclusterSize()*5+1) != 5 || g.SubIndex(g.ClusterSize-1) != 31 {
			t.Fatalf("cluster_bits %d: SubIndex", cb)
		}
		s := NewGeometry(cb, 4, false)
		if s.L2EntrySize != 8 || s.Subclusters() != 1 || s.SubclusterBits() != cb || s.SubIndex(s.ClusterSize-1) != 0 {
			t.Fatalf("standard cluster_bits %d: %+v", cb, s)
		}
	}
}

// TestSubcluster_TableCodecs: extended entries land as two big-endian
// words at i*16; a standard geometry ignores bitmaps.
func TestSubcluster_TableCodecs(t *testing.T) {
	g := NewGeometry(16, 4, true)
	b := make([]byte, 3*16)
	g.PutL2(b, 1, MakeL2(0x50000, true, false))
	g.PutBitmap(b, 1, SubAlloc(0)|SubZero(31))
	g.PutBitmap(b, 2, 7)
	g.PutL2(b, 2, 0x70000) // leaves the bitmap
	want := []byte{
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0x80, 0, 0, 0, 0, 5, 0, 0, 0x80, 0, 0, 0, 0, 0, 0, 1,
		0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("table bytes %x, want %x", b, want)
	}
	if g.L2At(b, 1) != MakeL2(0x50000, true, false) || g.BitmapAt(b, 1) != SubAlloc(0)|SubZero(31) || g.BitmapAt(b, 2) != 7 {
		t.Fatal("extended entries do not read back")
	}
	s := NewGeometry(16, 4, false)
	sb := make([]byte, 16)
	s.PutL2(sb, 1, 0x30000)
	s.PutBitmap(sb, 1, ^uint64(0))
	if s.L2At(sb, 1) != 0x30000 || L2At(sb, 1) != 0x30000 || s.BitmapAt(sb, 1) != 0 || !bytes.Equal(sb[:8], make([]byte, 8)) {
		t.Fatalf("standard geometry: %x", sb)
	}
}

func TestSubcluster_Ranges(t *testing.T) {
	if SubAllocRange(0, 32) != SubAllocAll || SubZeroRange(0, 32) != SubZeroAll || SubAllocRange(3, 3) != 0 ||
		SubAllocRange(2, 5) != 0b11100 || SubZeroRange(31, 32) != SubZero(31) {
		t.Fatal("ranges")
	}
}

// TestSubcluster_RangeType: the run from a subcluster has its type and
// ends where the type changes (QEMU qcow2_get_subcluster_range_type).
func TestSubcluster_RangeType(t *testing.T) {
	alloc := MakeL2(0x50000, true, false)
	cases := []struct {
		e      L2Entry
		bitmap uint64
		first  uint
		want   SubclusterType
		n      uint
	}{
		{0, 0, 0, SubUnallocatedPlain, 32},
		{0, 0, 31, SubUnallocatedPlain, 1},
		{0, SubZeroRange(4, 8), 0, SubUnallocatedPlain, 4},
		{0, SubZeroRange(4, 8), 4, SubZeroPlain, 4},
		{0, SubZeroRange(4, 8), 8, SubUnallocatedPlain, 24},
		{alloc, SubAllocRange(0, 3) | SubZeroRange(3, 5), 1, SubNormal, 2},
		{alloc, SubAllocRange(0, 3) | SubZeroRange(3, 5), 3, SubZeroAlloc, 2},
		{alloc, SubAllocRange(0, 3) | SubZeroRange(3, 5), 5, SubUnallocatedAlloc, 27},
		{alloc, SubAllocAll, 0, SubNormal, 32},
		{alloc, SubAlloc(3) | SubZero(3), 0, SubInvalid, 32},
		{OflagCompressed | 0x1000, 0, 7, SubCompressed, 25},
	}
	for _, c := range cases {
		ty, n := SubclusterRangeType(c.e, c.bitmap, c.first)
		if ty != c.want || n != c.n {
			t.Errorf("%#x/%#x from %d: %d x%d, want %d x%d", uint64(c.e), c.bitmap, c.first, ty, n, c.want, c.n)
		}
	}
}

// checkRangeType is the property the fuzz target checks: the run reported
// from first has first's type throughout and the next subcluster (if
// any) does not.
func checkRangeType(t *testing.T, e L2Entry, bitmap uint64, first uint) {
	ty, n := SubclusterRangeType(e, bitmap, first)
	if first >= SubclustersPerCluster {
		return
	}
	if n == 0 || first+n > SubclustersPerCluster {
		t.Fatalf("%#x/%#x from %d: run %d", uint64(e), bitmap, first, n)
	}
	for i := first; i < first+n; i++ {
		if SubclusterTypeOf(e, bitmap, i) != ty {
			t.Fatalf("%#x/%#x from %d: subcluster %d is %d, run says %d", uint64(e), bitmap, first, i, SubclusterTypeOf(e, bitmap, i), ty)
		}
	}
	if end := first + n; end < SubclustersPerCluster && SubclusterTypeOf(e, bitmap, end) == ty {
		t.Fatalf("%#x/%#x from %d: run %d stops early", uint64(e), bitmap, first, n)
	}
}
