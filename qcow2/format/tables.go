package format

// Table codecs. The L1 table, the L2 tables (standard entries) and the
// refcount table are arrays of big-endian 64-bit words on disk. These
// read and write word i of such a table held in a buffer (a table, a
// cached slice of one, or a chunk being written), so that no engine code
// decodes table bytes itself.

// TableEntrySize is the size of an L1, standard L2 or refcount table
// entry.
const TableEntrySize = 8

// L1At returns entry i of an L1 table.
func L1At(tbl []byte, i uint64) L1Entry { return L1Entry(be.Uint64(tbl[i*TableEntrySize:])) }

// PutL1 stores e as entry i of an L1 table.
func PutL1(tbl []byte, i uint64, e L1Entry) { be.PutUint64(tbl[i*TableEntrySize:], uint64(e)) }

// L2At returns standard entry i of an L2 table (or of a slice of one).
func L2At(tbl []byte, i uint64) L2Entry { return L2Entry(be.Uint64(tbl[i*TableEntrySize:])) }

// PutL2 stores e as standard entry i of an L2 table (or of a slice of
// one).
func PutL2(tbl []byte, i uint64, e L2Entry) { be.PutUint64(tbl[i*TableEntrySize:], uint64(e)) }

// ReftableAt returns entry i of a refcount table as stored, reserved bits
// included (ValidateReftableEntry checks them): the host offset of a
// refcount block, or 0.
func ReftableAt(tbl []byte, i uint64) HostOff { return HostOff(be.Uint64(tbl[i*TableEntrySize:])) }

// PutReftable stores the refcount block offset off as entry i of a
// refcount table.
func PutReftable(tbl []byte, i uint64, off HostOff) {
	be.PutUint64(tbl[i*TableEntrySize:], uint64(off))
}

// HasMagic reports whether b starts with the qcow2 magic.
func HasMagic(b []byte) bool { return len(b) >= 4 && be.Uint32(b) == Magic }

// L2At returns the first (standard) word of entry i of an L2 table (or of
// a slice of one) with this geometry's entry size: 8 bytes, or 16 with
// extended L2. With extended L2 a standard entry's zero flag (bit 0) is
// reserved and read as clear, as QEMU reads it (qcow2_get_cluster_type
// ignores it there; the subcluster bitmap says what reads as zeros). A
// compressed entry's bit 0 is its host offset's.
func (g *Geometry) L2At(tbl []byte, i uint64) L2Entry {
	e := L2Entry(be.Uint64(tbl[i*g.L2EntrySize:]))
	if g.ExtendedL2 && !e.Compressed() {
		e &^= OflagZero
	}
	return e
}

// PutL2 stores e as the first word of entry i, leaving an extended
// entry's bitmap alone.
func (g *Geometry) PutL2(tbl []byte, i uint64, e L2Entry) {
	be.PutUint64(tbl[i*g.L2EntrySize:], uint64(e))
}

// BitmapAt returns the subcluster bitmap (second word) of extended entry
// i, or 0 without extended L2.
func (g *Geometry) BitmapAt(tbl []byte, i uint64) uint64 {
	if !g.ExtendedL2 {
		return 0
	}
	return be.Uint64(tbl[i*g.L2EntrySize+TableEntrySize:])
}

// PutBitmap stores the subcluster bitmap of extended entry i (nothing
// without extended L2, where a bitmap must be 0).
func (g *Geometry) PutBitmap(tbl []byte, i uint64, bitmap uint64) {
	if g.ExtendedL2 {
		be.PutUint64(tbl[i*g.L2EntrySize+TableEntrySize:], bitmap)
	}
}
