package format

// MaxSnapshots is QEMU's QCOW_MAX_SNAPSHOTS.
const MaxSnapshots = 65536

// MaxSnapshotTableBytes is QEMU's QCOW_MAX_SNAPSHOTS_SIZE: QEMU neither
// opens an image whose snapshot table is longer ("Snapshot table is too
// big") nor writes one.
const MaxSnapshotTableBytes = 64 << 20

// SnapshotTableNeed reports how many bytes from the table's start the
// first n entries take as far as b, the table's first bytes, tells:
// complete when b holds them all (need is then their end, without the
// last entry's padding); else need is past len(b), the end of the
// first entry b does not hold, or of its fixed part when b ends inside
// that. An entry may take up to 40+1024+2*65535 bytes: a reader that
// guessed a size reads again up to need.
func SnapshotTableNeed(b []byte, n uint32) (need uint64, complete bool) {
	off := uint64(0)
	for i := uint32(0); i < n; i++ {
		if off+40 > uint64(len(b)) {
			return off + 40, false
		}
		end := off + 40 + uint64(be.Uint32(b[off+36:])) + uint64(be.Uint16(b[off+12:])) + uint64(be.Uint16(b[off+14:]))
		if end > uint64(len(b)) {
			return end, false
		}
		off = (end + 7) &^ 7
		need = end
	}
	return need, true
}

// Snapshot is one entry of the snapshot table.
type Snapshot struct {
	L1TableOffset HostOff
	L1Size        uint32
	ID, Name      string
	DateSec       uint32
	DateNsec      uint32
	VMClockNsec   uint64
	VMStateSize   uint32
	ExtraData     []byte
	DiskSize      uint64 // from extra data, when present (HasDiskSize)
}

// HasDiskSize reports whether the entry records the disk size it was
// taken at (extra data of 16 bytes or more); without it QEMU takes the
// image's current size.
func (s Snapshot) HasDiskSize() bool { return len(s.ExtraData) >= 16 }

// CheckL1 reports an entry whose L1 table cannot be one: not cluster
// aligned, or larger than QEMU's limit for an L1 table. The table parses
// without it (ParseSnapshots), as QEMU lists such an entry; QEMU's check
// reports it as a corrupted entry, and nothing may read its table.
func (s Snapshot) CheckL1(g *Geometry) error {
	if !g.Aligned(s.L1TableOffset) {
		return corrupt("snapshot_l1_table_offset", uint64(s.L1TableOffset), "not cluster aligned")
	}
	if uint64(s.L1Size)*TableEntrySize > MaxL1Bytes {
		return unsupported("snapshot_l1_size", uint64(s.L1Size), "snapshot L1 too large")
	}
	return nil
}

// ParseSnapshots decodes n entries from b (the snapshot table). It returns
// the entries and the table's length in bytes, each entry padded to 8 as
// QEMU lays them out. The padding of the last entry may lie past len(b):
// QEMU does not write it, so an image can end right after the last name.
func ParseSnapshots(b []byte, n uint32) ([]Snapshot, uint64, error) {
	var out []Snapshot
	off := uint64(0)
	for i := uint32(0); i < n; i++ {
		if off+40 > uint64(len(b)) {
			return nil, 0, corrupt("snapshot_table", off, "snapshot %d runs past the table", i)
		}
		s := Snapshot{
			L1TableOffset: HostOff(be.Uint64(b[off:])),
			L1Size:        be.Uint32(b[off+8:]),
			DateSec:       be.Uint32(b[off+16:]),
			DateNsec:      be.Uint32(b[off+20:]),
			VMClockNsec:   be.Uint64(b[off+24:]),
			VMStateSize:   be.Uint32(b[off+32:]),
		}
		idLen := uint64(be.Uint16(b[off+12:]))
		nameLen := uint64(be.Uint16(b[off+14:]))
		extra := uint64(be.Uint32(b[off+36:]))
		off += 40
		if extra > 1024 {
			// QEMU's limit (QCOW_MAX_SNAPSHOT_EXTRA_DATA), in its words.
			return nil, 0, corrupt("snapshot_table", off, "Too much extra metadata in snapshot table entry %d", i)
		}
		if off+extra+idLen+nameLen > uint64(len(b)) {
			return nil, 0, corrupt("snapshot_table", off, "snapshot %d runs past the table", i)
		}
		s.ExtraData = append([]byte(nil), b[off:off+extra]...)
		if extra >= 16 {
			s.DiskSize = be.Uint64(s.ExtraData[8:])
		}
		off += extra
		s.ID = string(b[off : off+idLen])
		off += idLen
		s.Name = string(b[off : off+nameLen])
		off += nameLen
		off = (off + 7) &^ 7
		out = append(out, s)
	}
	return out, off, nil
}
