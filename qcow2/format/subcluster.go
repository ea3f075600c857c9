package format

import "math/bits"

// Subclusters (extended L2 entries, QEMU 5.2+). Each cluster of an image
// with the extended-L2 incompatible bit is split into 32 subclusters;
// the second word of its L2 entry holds one allocation bit (bits 0-31)
// and one zero bit (bits 32-63) per subcluster (QEMU docs/interop/qcow2.rst,
// "Extended L2 Entries").

// SubclustersPerCluster is the number of subclusters of a cluster with
// extended L2 entries.
const SubclustersPerCluster = 32

// SubZeroAll is the mask of every zero bit (QCOW_L2_BITMAP_ALL_ZEROES).
const SubZeroAll = uint64(0xffffffff) << 32

// SubAllocRange is the allocation bits of subclusters [from, to)
// (QCOW_OFLAG_SUB_ALLOC_RANGE); to <= 32.
func SubAllocRange(from, to uint) uint64 {
	if from >= to {
		return 0
	}
	return (uint64(1)<<(to-from) - 1) << from
}

// SubZeroRange is the zero bits of subclusters [from, to)
// (QCOW_OFLAG_SUB_ZERO_RANGE).
func SubZeroRange(from, to uint) uint64 { return SubAllocRange(from, to) << 32 }

// Subclusters is the number of subclusters per cluster: 32 with extended
// L2, else 1 (the cluster is its own only subcluster).
func (g *Geometry) Subclusters() uint64 {
	if g.ExtendedL2 {
		return SubclustersPerCluster
	}
	return 1
}

// SubclusterBits is log2 of the subcluster size.
func (g *Geometry) SubclusterBits() uint32 {
	if g.ExtendedL2 {
		return g.ClusterBits - 5
	}
	return g.ClusterBits
}

// SubIndex is the index of the subcluster holding byte in (an offset
// within its cluster).
func (g *Geometry) SubIndex(in uint64) uint { return uint(in >> g.SubclusterBits()) }

// SubclusterRangeType is QEMU's qcow2_get_subcluster_range_type: the type
// of subcluster first of the extended entry (e, bitmap) and the number of
// consecutive subclusters from it with the same type (at least 1, at most
// 32-first). For a compressed or invalid entry every subcluster from
// first has the type.
func SubclusterRangeType(e L2Entry, bitmap uint64, first uint) (SubclusterType, uint) {
	t := SubclusterTypeOf(e, bitmap, first)
	if t == SubInvalid || t == SubCompressed || first >= SubclustersPerCluster {
		return t, SubclustersPerCluster - min(first, SubclustersPerCluster)
	}
	alloc := uint32(bitmap)
	zero := uint32(bitmap >> 32)
	// Bits of subclusters below first count as "different": shift them
	// out and count the run of equal bits.
	var val uint32 // 1 where the subcluster has the property of t
	switch t {
	case SubNormal:
		val = alloc
	case SubZeroPlain, SubZeroAlloc:
		val = zero
	default: // unallocated: neither bit
		val = ^(alloc | zero)
	}
	run := uint(bits.TrailingZeros32(^(val >> first)))
	return t, min(run, SubclustersPerCluster-first)
}
