package format

// GuestOff is a byte offset in the virtual disk.
type GuestOff uint64

// HostOff is a byte offset in the image file.
type HostOff uint64

// Geometry holds every shift and mask derived from the header, computed
// once (FM4). Its methods split and build offsets of one kind each: a
// guest offset becomes a host one only through an L2 entry (or HostFor,
// given the host cluster an entry names).
type Geometry struct {
	ClusterBits     uint32
	ClusterSize     uint64
	ClusterMask     uint64 // ClusterSize-1
	ExtendedL2      bool
	L2EntrySize     uint64 // 8, or 16 with extended L2
	L2Bits          uint32 // log2(entries per L2 table)
	L2Entries       uint64
	RefcountOrder   uint32
	RefcountBits    uint32
	RefblockBits    uint32 // log2(entries per refcount block)
	RefblockEntries uint64
	RefcountMax     uint64
	// CompressedOffBits is the width of the host offset field of a
	// compressed L2 descriptor: 62 - (cluster_bits - 8).
	CompressedOffBits uint32
}

// NewGeometry derives the geometry. clusterBits must be in [9, 21] and
// refcountOrder in [0, 6] (ParseHeader checks this).
func NewGeometry(clusterBits, refcountOrder uint32, extendedL2 bool) Geometry {
	g := Geometry{
		ClusterBits:   clusterBits,
		ClusterSize:   1 << clusterBits,
		ExtendedL2:    extendedL2,
		L2EntrySize:   8,
		RefcountOrder: refcountOrder,
		RefcountBits:  1 << refcountOrder,
	}
	g.ClusterMask = g.ClusterSize - 1
	if extendedL2 {
		g.L2EntrySize = 16
	}
	g.L2Entries = g.ClusterSize / g.L2EntrySize
	g.L2Bits = ilog2(g.L2Entries)
	g.RefblockBits = clusterBits + 3 - refcountOrder
	g.RefblockEntries = 1 << g.RefblockBits
	if g.RefcountBits == 64 {
		g.RefcountMax = ^uint64(0)
	} else {
		g.RefcountMax = 1<<g.RefcountBits - 1
	}
	g.CompressedOffBits = 62 - (clusterBits - 8)
	return g
}

// Aligned reports whether host offset off is a multiple of the cluster
// size.
func (g *Geometry) Aligned(off HostOff) bool { return uint64(off)&g.ClusterMask == 0 }

// L1EntriesFor is the number of L1 entries needed for a virtual size.
func (g *Geometry) L1EntriesFor(size uint64) uint64 {
	per := g.ClusterSize * g.L2Entries // bytes covered by one L2 table
	return (size + per - 1) / per
}

// L1Index is the L1 index of a guest offset.
func (g *Geometry) L1Index(o GuestOff) uint64 { return uint64(o) >> (g.ClusterBits + g.L2Bits) }

// L2Index is the index within its L2 table of a guest offset.
func (g *Geometry) L2Index(o GuestOff) uint64 {
	return (uint64(o) >> g.ClusterBits) & (g.L2Entries - 1)
}

// InCluster is the offset of guest offset o within its cluster.
func (g *Geometry) InCluster(o GuestOff) uint64 { return uint64(o) & g.ClusterMask }

// GuestCluster is the index of the guest cluster holding o.
func (g *Geometry) GuestCluster(o GuestOff) uint64 { return uint64(o) >> g.ClusterBits }

// GuestClusterOff is the guest offset of guest cluster c.
func (g *Geometry) GuestClusterOff(c uint64) GuestOff { return GuestOff(c << g.ClusterBits) }

// HostCluster is the index of the host cluster holding o (the index
// refcounts are kept by, see RefIndex).
func (g *Geometry) HostCluster(o HostOff) uint64 { return uint64(o) >> g.ClusterBits }

// HostClusterOff is the host offset of host cluster c.
func (g *Geometry) HostClusterOff(c uint64) HostOff { return HostOff(c << g.ClusterBits) }

// HostFor is the host offset of guest offset o when o's cluster is
// mapped to the host cluster at cluster.
func (g *Geometry) HostFor(cluster HostOff, o GuestOff) HostOff {
	return cluster + HostOff(g.InCluster(o))
}

// RefIndex splits a host cluster index into (refcount table index, index
// within the refcount block).
func (g *Geometry) RefIndex(cluster uint64) (table, block uint64) {
	return cluster >> g.RefblockBits, cluster & (g.RefblockEntries - 1)
}

// SubclusterSize is the extended-L2 subcluster size (cluster/32).
func (g *Geometry) SubclusterSize() uint64 { return g.ClusterSize / 32 }
