package format

import "fmt"

// Entry bits.
const (
	OflagCopied      = 1 << 63
	OflagCompressed  = 1 << 62
	OflagZero        = 1 << 0
	L1OffsetMask     = 0x00fffffffffffe00
	L2OffsetMask     = 0x00fffffffffffe00
	L1ReservedMask   = 0x7f000000000001ff
	L2ReservedMask   = 0x3f000000000001fe
	RefTableReserved = 0x1ff
	RefTableOffMask  = ^uint64(0x1ff)
)

// L1Entry is a raw L1 table entry.
type L1Entry uint64

// Offset is the L2 table's host offset (0: unallocated).
func (e L1Entry) Offset() HostOff { return HostOff(uint64(e) & L1OffsetMask) }

// Copied reports the COPIED flag (the L2 table's refcount is exactly 1).
func (e L1Entry) Copied() bool { return uint64(e)&OflagCopied != 0 }

// Validate checks reserved bits and alignment (FM5).
func (e L1Entry) Validate(g *Geometry) error {
	if uint64(e)&L1ReservedMask != 0 {
		return corrupt("l1_entry", uint64(e), "reserved bits set")
	}
	if !g.Aligned(e.Offset()) {
		return corrupt("l1_entry", uint64(e), "L2 table offset not cluster aligned")
	}
	return nil
}

// MakeL1 builds an L1 entry.
func MakeL1(off HostOff, copied bool) L1Entry {
	e := uint64(off) & L1OffsetMask
	if copied {
		e |= OflagCopied
	}
	return L1Entry(e)
}

// ClusterType is QEMU's qcow2_get_cluster_type.
type ClusterType uint8

const (
	ClusterUnallocated ClusterType = iota
	ClusterZeroPlain               // zero flag, no host offset
	ClusterZeroAlloc               // zero flag, host cluster preallocated
	ClusterNormal
	ClusterCompressed
)

func (t ClusterType) String() string {
	switch t {
	case ClusterUnallocated:
		return "unallocated"
	case ClusterZeroPlain:
		return "zero-plain"
	case ClusterZeroAlloc:
		return "zero-alloc"
	case ClusterNormal:
		return "normal"
	case ClusterCompressed:
		return "compressed"
	}
	return fmt.Sprintf("ClusterType(%d)", uint8(t))
}

// L2Entry is a raw standard L2 entry (the first word of an extended one).
type L2Entry uint64

// Compressed reports the compressed flag.
func (e L2Entry) Compressed() bool { return uint64(e)&OflagCompressed != 0 }

// Copied reports COPIED.
func (e L2Entry) Copied() bool { return uint64(e)&OflagCopied != 0 }

// Zero reports the zero flag (standard L2, not compressed).
func (e L2Entry) Zero() bool { return !e.Compressed() && uint64(e)&OflagZero != 0 }

// Offset is the host cluster offset of a non-compressed entry.
func (e L2Entry) Offset() HostOff { return HostOff(uint64(e) & L2OffsetMask) }

// Type classifies a standard entry. Extended L2 entries never use the zero
// bit; callers classify them with SubclusterType.
func (e L2Entry) Type() ClusterType {
	if e.Compressed() {
		return ClusterCompressed
	}
	if uint64(e)&OflagZero != 0 {
		if e.Offset() != 0 {
			return ClusterZeroAlloc
		}
		return ClusterZeroPlain
	}
	if e.Offset() != 0 {
		return ClusterNormal
	}
	return ClusterUnallocated
}

// Validate checks reserved bits and alignment of a standard entry (FM5).
// version 2 images may not use the zero flag.
func (e L2Entry) Validate(g *Geometry, version uint32) error {
	if e.Compressed() {
		if e.Copied() {
			return corrupt("l2_entry", uint64(e), "compressed entry with COPIED")
		}
		return nil
	}
	if uint64(e)&L2ReservedMask != 0 {
		return corrupt("l2_entry", uint64(e), "reserved bits set")
	}
	if uint64(e)&OflagZero != 0 && (version < 3 || g.ExtendedL2) {
		return corrupt("l2_entry", uint64(e), "zero flag not allowed in this image")
	}
	if !g.Aligned(e.Offset()) {
		return corrupt("l2_entry", uint64(e), "host offset not cluster aligned")
	}
	return nil
}

// MakeL2 builds a normal (or zero-alloc) entry.
func MakeL2(off HostOff, copied, zero bool) L2Entry {
	e := uint64(off) & L2OffsetMask
	if copied {
		e |= OflagCopied
	}
	if zero {
		e |= OflagZero
	}
	return L2Entry(e)
}

// CompressedDesc is a decoded compressed-cluster descriptor.
type CompressedDesc struct {
	Off  HostOff // byte offset, not aligned
	Size uint64  // bytes to read (may run past the compressed stream)
}

// DecodeCompressed decodes a compressed descriptor; field widths depend on
// cluster_bits (QEMU qcow2_parse_compressed_l2_entry).
func (e L2Entry) DecodeCompressed(g *Geometry) CompressedDesc {
	x := g.CompressedOffBits
	v := uint64(e) &^ (OflagCopied | OflagCompressed)
	off := v & (1<<x - 1)
	nsec := (v >> x) + 1
	size := nsec*512 - (off & 511)
	return CompressedDesc{Off: HostOff(off), Size: size}
}

// EncodeCompressed builds a compressed descriptor for a stream of n bytes
// at host byte offset off. It fails if the stream cannot be described.
func EncodeCompressed(g *Geometry, off HostOff, n uint64) (L2Entry, error) {
	x := g.CompressedOffBits
	if uint64(off) >= 1<<x {
		return 0, unsupported("compressed_offset", uint64(off), "offset too large for cluster_bits %d", g.ClusterBits)
	}
	if n == 0 || n > g.ClusterSize*2 {
		return 0, unsupported("compressed_size", n, "bad compressed size")
	}
	// number of 512-byte sectors touched, minus one
	first := uint64(off) >> 9
	last := (uint64(off) + n - 1) >> 9
	nsec := last - first
	if nsec >= 1<<(62-x) {
		return 0, unsupported("compressed_size", n, "too many sectors")
	}
	return L2Entry(OflagCompressed | nsec<<x | uint64(off)), nil
}

// Extended L2 (second word) bitmaps.

// SubAlloc is the allocation bit of subcluster i.
func SubAlloc(i uint) uint64 { return 1 << i }

// SubZero is the zero bit of subcluster i.
func SubZero(i uint) uint64 { return 1 << (i + 32) }

// SubclusterType is QEMU's qcow2_get_subcluster_type.
type SubclusterType uint8

const (
	SubUnallocatedPlain SubclusterType = iota
	SubUnallocatedAlloc
	SubZeroPlain
	SubZeroAlloc
	SubNormal
	SubCompressed
	SubInvalid
)

// SubAllocAll is the mask of every allocation bit (QCOW_L2_BITMAP_ALL_ALLOC).
const SubAllocAll = 0xffffffff

// SubclusterTypeOf classifies subcluster i (0..31) of an extended entry
// (word1, bitmap) as QEMU's qcow2_get_subcluster_type does. The entry as a
// whole is invalid, whatever i, when any subcluster has both its
// allocation and zero bits set, or when an unallocated cluster has any
// allocation bit. Stricter than QEMU, which reports these only in check:
// a compressed entry with a non-zero bitmap, a set standard zero bit
// (reserved with extended L2) and i >= 32 are invalid too.
func SubclusterTypeOf(e L2Entry, bitmap uint64, i uint) SubclusterType {
	if i >= 32 {
		return SubInvalid
	}
	if e.Compressed() {
		if bitmap != 0 {
			return SubInvalid
		}
		return SubCompressed
	}
	if uint64(e)&OflagZero != 0 {
		return SubInvalid
	}
	alloc := bitmap&SubAlloc(i) != 0
	zero := bitmap&SubZero(i) != 0
	if e.Offset() != 0 {
		switch {
		case (bitmap>>32)&bitmap != 0:
			return SubInvalid
		case zero:
			return SubZeroAlloc
		case alloc:
			return SubNormal
		default:
			return SubUnallocatedAlloc
		}
	}
	switch {
	case bitmap&SubAllocAll != 0:
		return SubInvalid
	case zero:
		return SubZeroPlain
	default:
		return SubUnallocatedPlain
	}
}

// ValidateBitmap checks the second word of an extended L2 entry against
// its first word (FM5), as qemu-img check does: a compressed cluster has
// an all-zero bitmap, no subcluster is both allocated and zero, and an
// unallocated cluster has no allocated subcluster.
func ValidateBitmap(e L2Entry, bitmap uint64) error {
	switch {
	case e.Compressed():
		if bitmap != 0 {
			return corrupt("l2_bitmap", bitmap, "compressed cluster with a non-zero subcluster bitmap")
		}
	case (bitmap>>32)&bitmap != 0:
		return corrupt("l2_bitmap", bitmap, "subcluster both allocated and zero")
	case e.Offset() == 0 && bitmap&SubAllocAll != 0:
		return corrupt("l2_bitmap", bitmap, "allocated subcluster in an unallocated cluster")
	}
	return nil
}

// ValidateReftableEntry checks a refcount table entry as stored
// (ReftableAt): reserved bits 0-8 clear and the refcount block cluster
// aligned (FM5).
func ValidateReftableEntry(g *Geometry, v HostOff) error {
	if uint64(v)&RefTableReserved != 0 {
		return corrupt("refcount_table_entry", uint64(v), "reserved bits set")
	}
	if !g.Aligned(v) {
		return corrupt("refcount_table_entry", uint64(v), "refcount block not cluster aligned")
	}
	return nil
}
